// Reads a sandbox's envd log ring (GET /cove/logs, init token). What answers on the envd port is the tenant's,
// so the read is bounded in bytes and time (readCapped, as /init) and the body must pass the contract's schema.
// The wait (GET /cove/logs/wait) is held by envd until its ring has news: its bound is the wait plus the same margin.

import { request } from 'undici';
import { ENVD_LOGS_MAX_WAIT_MS, ENVD_LOGS_PATH, ENVD_LOGS_WAIT_PATH, ENVD_LOG_LIMITS, EnvdLogsReply, EnvdLogsWaitReply } from '@cove/contracts/telemetry';
import { EnvdReplyRejected, readCapped } from '../sandboxes/envd-init.js';
import { ENVD_INIT_TOKEN_HEADER, ENVD_PORT } from '@cove/contracts/sandbox';

/**
 * The ring holds at most 1 MiB of JSON, so an honest reply stays below it; twice that is the bound. A reply of
 * the maximum entry count, each at its field bounds, would be larger: envd's ring refuses to hold it anyway.
 */
export const ENVD_LOGS_REPLY_MAX_BYTES = 2 * 1024 * 1024;
/** Whole-call bound (headers and body): a reply that drips cannot hold the puller. */
export const ENVD_LOGS_TIMEOUT_MS = 5_000;

export type EnvdLogsFailure = 'envd_reply_too_large' | 'envd_reply_timeout' | 'envd_reply_invalid' | 'envd_unreachable' | 'envd_refused';

export class EnvdLogsUnreadable extends Error {
  /** The HTTP status of an `envd_refused`. */
  readonly status: number | undefined;
  constructor(readonly code: EnvdLogsFailure, message: string, options?: ErrorOptions & { status?: number }) {
    super(message, options);
    this.status = options?.status;
    this.name = 'EnvdLogsUnreadable';
  }
}

/** An answer to the wait is a few bytes (`{"last":N}`); anything longer is not envd's. */
export const ENVD_LOGS_WAIT_REPLY_MAX_BYTES = 256;

/** GET of one of envd's log routes: the status and a body read within `maxBytes` and `timeoutMs` (headers included). */
async function getCapped(url: string, initToken: string, maxBytes: number, timeoutMs: number, signal?: AbortSignal): Promise<{ status: number; text: string }> {
  try {
    const res = await request(url, {
      method: 'GET',
      headers: { [ENVD_INIT_TOKEN_HEADER]: initToken },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs),
    });
    return { status: res.statusCode, text: await readCapped(res.body, maxBytes) };
  } catch (err) {
    if (err instanceof EnvdReplyRejected) throw new EnvdLogsUnreadable(err.code, err.message, { cause: err });
    const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError' || /timeout/i.test((err as { code?: string }).code ?? ''));
    throw new EnvdLogsUnreadable(timedOut ? 'envd_reply_timeout' : 'envd_unreachable', `envd logs: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/**
 * Waits until envd's ring holds something after `after` (or began again), at most `waitMs`, and returns its last
 * seq. An envd that predates the route (a memory snapshot of an older envd) answers 404: `envd_refused`, status 404.
 */
export async function waitEnvdLogs(address: string, initToken: string, after: number, waitMs: number, signal?: AbortSignal): Promise<EnvdLogsWaitReply> {
  const wait = Math.min(waitMs, ENVD_LOGS_MAX_WAIT_MS);
  const { status, text } = await getCapped(
    `http://${address}:${ENVD_PORT}${ENVD_LOGS_WAIT_PATH}?after=${after}&wait=${wait}`,
    initToken,
    ENVD_LOGS_WAIT_REPLY_MAX_BYTES,
    wait + ENVD_LOGS_TIMEOUT_MS,
    signal,
  );
  if (status !== 200) throw new EnvdLogsUnreadable('envd_refused', `envd ${ENVD_LOGS_WAIT_PATH} answered ${status}`, { status });
  const parsed = EnvdLogsWaitReply.safeParse(parseJson(text));
  if (!parsed.success || !Number.isSafeInteger(parsed.data.last)) throw new EnvdLogsUnreadable('envd_reply_invalid', 'envd logs wait reply does not match the contract');
  return parsed.data;
}

export async function pullEnvdLogs(address: string, initToken: string, after: number, timeoutMs = ENVD_LOGS_TIMEOUT_MS): Promise<EnvdLogsReply> {
  const { status, text } = await getCapped(
    `http://${address}:${ENVD_PORT}${ENVD_LOGS_PATH}?after=${after}&limit=${ENVD_LOG_LIMITS.maxEntries}`,
    initToken,
    ENVD_LOGS_REPLY_MAX_BYTES,
    timeoutMs,
  );
  if (status !== 200) throw new EnvdLogsUnreadable('envd_refused', `envd ${ENVD_LOGS_PATH} answered ${status}`, { status });
  const json = parseJson(text);
  if (json === undefined) throw new EnvdLogsUnreadable('envd_reply_invalid', 'envd logs reply is not JSON');
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

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
