// Benchmark upstream, run as its own process: a minimal HTTP server answering every request with a small
// body, standing in for a node traffic proxy + sandbox port. Like envd it reads a request body whole before it
// answers, and a body whose length differs from its Content-Length gets a 400 (the bench counts it as an
// error), so a proxy that lost or added bytes shows. Prints {"port":N} on stdout once listening.

import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

const BODY = Buffer.from('{"ok":true}');

const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  let received = 0;
  req.on('data', (chunk: Buffer) => (received += chunk.length));
  req.on('end', () => {
    const ok = received === Number(req.headers['content-length'] ?? 0);
    res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json', 'content-length': BODY.length });
    res.end(BODY);
  });
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
process.once('SIGTERM', () => {
  server.closeAllConnections();
  server.close();
});
