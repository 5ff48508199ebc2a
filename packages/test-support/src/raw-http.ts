// One HTTP/1.1 request written byte for byte (an exact request line, as no client library would send it), for
// tests of how a proxy reads request targets. Resolves with the answer's status code.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';

export async function rawHttpStatus(port: number, requestLine: string, headers: Record<string, string>): Promise<number> {
  return (await rawHttpExchange(port, [requestLine, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)])).status;
}

/**
 * One HTTP/1.1 exchange from head lines written as given (repeated fields, odd values); resolves with the
 * answer's status and body. The request carries `connection: close` and no body.
 */
export async function rawHttpExchange(port: number, head: readonly string[]): Promise<{ status: number; body: string }> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  // Not end(): a half-closed client counts as gone and its request is not forwarded; `connection: close` ends it.
  socket.write(`${[...head, 'connection: close'].join('\r\n')}\r\n\r\n`);
  let data = '';
  socket.setEncoding('utf8');
  for await (const chunk of socket) data += chunk as string;
  const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
  assert.ok(m, `no HTTP answer to ${head[0]}: ${JSON.stringify(data.slice(0, 200))}`);
  const split = data.indexOf('\r\n\r\n');
  const body = split === -1 ? '' : data.slice(split + 4);
  return { status: Number(m[1]), body: /^transfer-encoding: *chunked\r?$/im.test(data.slice(0, split)) ? dechunk(body) : body };
}

/** The payload of a chunked body (no trailers, which these tests never get). */
function dechunk(body: string): string {
  let out = '';
  let at = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', at);
    const size = parseInt(body.slice(at, eol), 16);
    if (!(size > 0)) return out;
    out += body.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}
