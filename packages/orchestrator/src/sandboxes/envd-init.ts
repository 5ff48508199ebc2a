// POST /init to a claimed slot's envd (reference e2b-infra.md §5.3): env vars, access token, default user.
// The slot's init token (X-Cove-Init-Token) proves the caller is the node, so nothing inside the sandbox
// can re-initialise envd. envd answers 204 with X-Envd-Version and where its log ring stood (X-Cove-Log-Seq).

import { Agent as HttpAgent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Code, ConnectError, type Interceptor, type Transport } from '@connectrpc/connect';
import { request, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { ENVD_INIT_PATH, ENVD_INIT_TOKEN_HEADER, ENVD_PORT, ENVD_VERSION_HEADER } from '@cove/contracts/sandbox';
import type { EnvdInitBody } from '@cove/contracts/sandbox/envd-init';
import { ENVD_INIT_LOG_SEQ_HEADER } from '@cove/contracts/telemetry';


// Whatever answers on a sandbox's envd port is the tenant's (root inside can subvert or replace envd), so
// every read of it is bounded in bytes and in time: a reply cannot grow the node's memory or hold a call.

/** A plain HTTP reply of envd (/init, /files): a status body or a short error text. */
export const ENVD_REPLY_MAX_BYTES = 64 * 1024;
/** One Connect message from envd; a process data event carries one pipe read (≤64 KiB). */
export const ENVD_MESSAGE_MAX_BYTES = 4 * 1024 * 1024;
/** Until envd's response headers are complete (envd answers them at once). */
export const ENVD_HEADERS_TIMEOUT_MS = 10_000;

export type EnvdReplyCode = 'envd_reply_too_large' | 'envd_reply_timeout';

/** What envd sent back was refused: larger than the bound, or not complete in time. */
export class EnvdReplyRejected extends Error {
  constructor(readonly code: EnvdReplyCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'EnvdReplyRejected';
  }
}

/** Reads at most `max` bytes of a reply body; more is an error and the connection is dropped. */
export async function readCapped(body: Dispatcher.ResponseData['body'], max = ENVD_REPLY_MAX_BYTES): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      body.destroy();
      throw new EnvdReplyRejected('envd_reply_too_large', `envd's reply is larger than ${max} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Fails a call whose response headers are not complete within `ms` (a reply that never starts). */
function headersWithin(ms: number): Interceptor {
  return (next) => async (req) => {
    const timer = new AbortController();
    const t = setTimeout(() => timer.abort(new ConnectError(`envd sent no response headers within ${ms} ms`, Code.DeadlineExceeded)), ms);
    try {
      return await next({ ...req, signal: AbortSignal.any([req.signal, timer.signal]) });
    } finally {
      clearTimeout(t);
    }
  };
}

/** The one Connect transport the node uses towards a sandbox's envd, with the bounds above. */
/**
 * No kept-alive sockets towards envd: slot addresses are reused within milliseconds, so a pooled socket to a
 * destroyed slot's address would be written into the next slot's stack and reset (a build failed so with
 * `write ECONNRESET`). A fresh connection to a sandbox on the node costs a fraction of a millisecond.
 */
const envdAgent = new HttpAgent({ keepAlive: false });

export function envdTransport(address: string, interceptors: Interceptor[] = [], format: 'binary' | 'json' = 'binary'): Transport {
  return createConnectTransport({
    baseUrl: `http://${address}:${ENVD_PORT}`,
    httpVersion: '1.1',
    useBinaryFormat: format === 'binary',
    nodeOptions: { agent: envdAgent },
    readMaxBytes: ENVD_MESSAGE_MAX_BYTES,
    interceptors: [headersWithin(ENVD_HEADERS_TIMEOUT_MS), ...interceptors],
  });
}

/** envd picks the user of a call from Basic authorization (no access token exists before /init). */
export function asUser(user: string): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${user}:`).toString('base64')}` };
}

/** What the node always sends (envd takes each field as optional); `timestamp` is RFC 3339, the clock's reference. */
export type NodeInitBody = Required<Omit<EnvdInitBody, 'accessToken'>> & Pick<EnvdInitBody, 'accessToken'>;
/** A pooled slot's warm-up: the template's defaults only, no timestamp, so any claim's /init applies after it. */
export type PoolInitBody = Required<Pick<EnvdInitBody, 'defaultUser' | 'defaultWorkdir'>>;

export interface EnvdInitOptions {
  address: string;
  initToken: string;
  body: NodeInitBody | PoolInitBody;
  /** Give up after this long; envd was healthy at boot so this only covers a slow start. */
  timeoutMs?: number;
  log: Logger;
  /** Stops the retries and the request in flight (the claim run beside it failed: the slot is being destroyed). */
  signal?: AbortSignal;
  /** false: the first failure is the answer (a warm-up: envd has just answered its health check). Default true. */
  retry?: boolean;
}

/** What envd's /init answered. */
export interface EnvdInitReply {
  version: string;
  /** The last seq of envd's log ring before this /init's record; undefined when envd did not say (or said nonsense). */
  logSeq: number | undefined;
}

/**
 * The seq on /init's answer, taken only as one plain decimal integer that JSON and the cursors file keep exactly;
 * anything else (the tenant's envd can answer anything) is as if unsaid: the sandbox's logs then begin at envd's start.
 */
function logSeqOf(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value)) return undefined;
  return Number(value);
}

/** Retries transient failures (connection refused, 5xx) until the deadline. */
export async function initEnvd(opts: EnvdInitOptions): Promise<EnvdInitReply> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  const payload = JSON.stringify(opts.body);
  let lastError: unknown;
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    opts.signal?.throwIfAborted();
    const left = Math.max(1000, deadline - Date.now());
    let status = 0;
    let text = '';
    let version: string | string[] | undefined;
    let logSeq: string | string[] | undefined;
    try {
      const res = await request(`http://${opts.address}:${ENVD_PORT}${ENVD_INIT_PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [ENVD_INIT_TOKEN_HEADER]: opts.initToken },
        body: payload,
        headersTimeout: left,
        bodyTimeout: left,
        // bodyTimeout is per chunk: a reply dripping a byte at a time needs a bound on the whole call.
        signal: opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(left)]) : AbortSignal.timeout(left),
      });
      status = res.statusCode;
      version = res.headers[ENVD_VERSION_HEADER];
      logSeq = res.headers[ENVD_INIT_LOG_SEQ_HEADER];
      text = await readCapped(res.body);
    } catch (err) {
      // Too large is a definite answer; anything else (refused, cut off) may pass before the deadline.
      if (err instanceof EnvdReplyRejected || opts.retry === false) throw err;
      lastError = err;
    }
    if (status === 204 || status === 200) return { version: (Array.isArray(version) ? version[0] : version) ?? '', logSeq: logSeqOf(logSeq) };
    if (status !== 0) {
      lastError = new Error(`envd /init answered ${status}: ${text.slice(0, 200)}`);
      // A 4xx is a definite answer (bad token, bad body): retrying cannot help.
      if ((status >= 400 && status < 500) || opts.retry === false) throw lastError;
    }
    opts.log.debug({ attempt, err: lastError }, 'envd /init not accepted yet');
    await sleep(Math.min(20 * 2 ** attempt, 250), undefined, opts.signal ? { signal: opts.signal } : {}).catch(() => undefined);
  }
  opts.signal?.throwIfAborted();
  // Refused connections, 5xx, or a reply that never completed (headers or body dripping).
  throw new EnvdReplyRejected('envd_reply_timeout', `envd /init gave no answer within ${opts.timeoutMs ?? 10_000} ms`, { cause: lastError });
}
