// Reads a sandbox's envd log ring (GET /cove/logs, init token). What answers on the envd port is the tenant's,
// so the read is bounded in bytes and time (readCapped, as /init) and the body must pass the contract's schema.

import { request } from 'undici';
import { ENVD_LOGS_PATH, ENVD_LOG_LIMITS, EnvdLogsReply } from '@cove/contracts/telemetry';
import { EnvdReplyRejected, readCapped } from '../sandboxes/envd-init.js';
import { ENVD_PORT } from '@cove/contracts/sandbox';

/**
 * The ring holds at most 1 MiB of JSON, so an honest reply stays below it; twice that is the bound. A reply of
 * the maximum entry count, each at its field bounds, would be larger: envd's ring refuses to hold it anyway.
 */
export const ENVD_LOGS_REPLY_MAX_BYTES = 2 * 1024 * 1024;
/** Whole-call bound (headers and body): a reply that drips cannot hold the puller. */
export const ENVD_LOGS_TIMEOUT_MS = 5_000;

export type EnvdLogsFailure = 'envd_reply_too_large' | 'envd_reply_timeout' | 'envd_reply_invalid' | 'envd_unreachable' | 'envd_refused';

export class EnvdLogsUnreadable extends Error {
  constructor(readonly code: EnvdLogsFailure, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'EnvdLogsUnreadable';
  }
}

export async function pullEnvdLogs(address: string, initToken: string, after: number, timeoutMs = ENVD_LOGS_TIMEOUT_MS): Promise<EnvdLogsReply> {
  let status: number;
  let text: string;
  try {
    const res = await request(`http://${address}:${ENVD_PORT}${ENVD_LOGS_PATH}?after=${after}&limit=${ENVD_LOG_LIMITS.maxEntries}`, {
      method: 'GET',
      headers: { 'x-cove-init-token': initToken },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
    status = res.statusCode;
    text = await readCapped(res.body, ENVD_LOGS_REPLY_MAX_BYTES);
  } catch (err) {
    if (err instanceof EnvdReplyRejected) throw new EnvdLogsUnreadable(err.code, err.message, { cause: err });
    const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError' || /timeout/i.test((err as { code?: string }).code ?? ''));
    throw new EnvdLogsUnreadable(timedOut ? 'envd_reply_timeout' : 'envd_unreachable', `envd logs: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (status !== 200) throw new EnvdLogsUnreadable('envd_refused', `envd ${ENVD_LOGS_PATH} answered ${status}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new EnvdLogsUnreadable('envd_reply_invalid', 'envd logs reply is not JSON');
  }
  const parsed = EnvdLogsReply.safeParse(json);
  if (!parsed.success) throw new EnvdLogsUnreadable('envd_reply_invalid', `envd logs reply does not match the contract: ${parsed.error.issues[0]?.message ?? ''}`);
  const reply = parsed.data;
  // Entries must come in order after the cursor (or from 1 after an envd restart); anything else is refused.
  let prev = reply.entries[0] && reply.entries[0].seq <= after ? 0 : after;
  for (const e of reply.entries) {
    if (e.seq <= prev) throw new EnvdLogsUnreadable('envd_reply_invalid', 'envd logs reply is out of order');
    prev = e.seq;
  }
  // The cursor is kept in the node's file across restarts: a value no JSON reader gets back exactly (1e300) is
  // refused here, so one sandbox cannot make the node's cursors file unreadable for every other sandbox.
  if (!Number.isSafeInteger(reply.next) || !reply.entries.every((e) => Number.isSafeInteger(e.seq))) {
    throw new EnvdLogsUnreadable('envd_reply_invalid', 'envd logs reply has a sequence number beyond 2^53');
  }
  return reply;
}
