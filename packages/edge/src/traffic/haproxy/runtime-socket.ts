// HAProxy's runtime API over its unix socket (0600, in the edge's run dir): one connection per batch of
// commands, `;`-separated on one line, the reply read to the socket's close with a size and time bound.

import { createConnection } from 'node:net';

/** A runtime API reply larger than this is not one of ours (map edits answer with a line at most). */
const MAX_REPLY_BYTES = 1024 * 1024;

/** Send `commands` (no `;` or newline inside one) and return HAProxy's reply text. */
export function runtimeCommand(socketPath: string, commands: readonly string[], timeoutMs = 2_000): Promise<string> {
  for (const c of commands) if (/[;\n\r]/.test(c)) throw new Error(`runtime command with a separator: ${c}`);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const socket = createConnection(socketPath);
    const timer = setTimeout(() => socket.destroy(new Error(`haproxy runtime API did not answer in ${timeoutMs} ms`)), timeoutMs);
    socket.on('connect', () => socket.end(`${commands.join(';')}\n`));
    socket.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_REPLY_BYTES) socket.destroy(new Error('haproxy runtime API reply too large'));
      else chunks.push(chunk);
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', (hadError) => {
      clearTimeout(timer);
      if (!hadError) resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}
