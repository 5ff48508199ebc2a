// The JSON bodies a sandbox proxy answers with. The E2B SDK matches on them (reference e2b-sdk.md §1.6 and
// e2b-infra.md §5.5): a 502 whose body says "The sandbox was not found" makes `isRunning()` false and turns
// envd calls into TimeoutError; "port is not open" becomes the closed-port hint. Keep the wording and the
// key order exactly as E2B's proxies emit them — `host.test.ts` in the SDK compares the whole body.

import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';

/** A JSON error body of the proxy contract: always `message` and `code` (the HTTP status), sometimes more. */
export interface ProxyErrorBody {
  message: string;
  code: number;
  [key: string]: unknown;
}

/** 502 body for a sandbox no node runs (E2B: `{"message":"The sandbox was not found","sandboxId","code":502}`). */
export function sandboxNotFoundBody(sandboxId: string): ProxyErrorBody {
  return { message: 'The sandbox was not found', sandboxId, code: 502 };
}

/** 502 body for a running sandbox whose port refuses connections (upstream ECONNREFUSED). */
export function portClosedBody(sandboxId: string, port: number): ProxyErrorBody {
  return { message: 'The sandbox is running but port is not open', sandboxId, port, code: 502 };
}

/** Any other proxy error: `{message, code}` with `code` equal to the HTTP status, plus optional fields. */
export function proxyErrorBody(status: number, message: string, extra: Record<string, unknown> = {}): ProxyErrorBody {
  return { message, ...extra, code: status };
}

/**
 * Answer `res` with `status` and the JSON `body`. When the response has already started (headers sent,
 * e.g. the upstream died mid-body) nothing coherent can be said any more, so the connection is destroyed:
 * the client sees a truncated response instead of a corrupt one.
 */
export function sendProxyError(res: ServerResponse, status: number, body: ProxyErrorBody): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

/**
 * Write a complete HTTP/1.1 error response straight onto a raw socket and close it. For the places where no
 * ServerResponse exists: failed WebSocket upgrades and the server's `clientError` (bad request line, header
 * overflow), where Node would otherwise answer with an empty body.
 */
export function writeRawProxyError(socket: Duplex, status: number, body: ProxyErrorBody): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const text = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
      'content-type: application/json\r\n' +
      `content-length: ${Buffer.byteLength(text)}\r\n` +
      'connection: close\r\n\r\n' +
      text,
  );
}
