// One HTTP/1.1 request written byte for byte (an exact request line, as no client library would send it), for
// tests of how a proxy reads request targets. Resolves with the answer's status code.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';

export async function rawHttpStatus(port: number, requestLine: string, headers: Record<string, string>): Promise<number> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const head = [requestLine, 'connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  // Not end(): a half-closed client counts as gone and its request is not forwarded; `connection: close` ends it.
  socket.write(`${head.join('\r\n')}\r\n\r\n`);
  let data = '';
  socket.setEncoding('utf8');
  for await (const chunk of socket) data += chunk as string;
  const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
  assert.ok(m, `no HTTP answer to ${requestLine}: ${JSON.stringify(data.slice(0, 200))}`);
  return Number(m[1]);
}
