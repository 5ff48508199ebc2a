import type { ServerResponse } from 'node:http';
import { httpStatusOf, toEnvdError } from '../errors.js';
import type { Logger } from 'pino';
import type { LogRing } from '../log-ring.js';

/** Writes a JSON body with the given status. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * The one place HTTP errors meet the wire: `{code, message}` with the mapped status.
 * Internal causes are logged, never sent.
 */
export function sendError(res: ServerResponse, err: unknown, log: Logger, ring?: LogRing): void {
  const e = toEnvdError(err);
  const status = httpStatusOf(e.code);
  ring?.record(status >= 500 ? 'error' : 'warn', e.message, { code: e.code, status });
  if (status >= 500 && status !== 507) log.error({ err: e.cause ?? e }, e.message);
  else log.debug({ code: e.code }, e.message);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { code: status, message: e.message });
}
