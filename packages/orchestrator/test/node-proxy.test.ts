// The node traffic proxy against real upstream servers on loopback standing in for a sandbox's ports.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { rawHttpStatus } from '@cove/test-support/raw-http';
import { createLogger } from '../src/logger.js';
import { createNodeProxy } from '../src/proxy/node-proxy.js';

const TOKEN = 'node-token-for-proxy-tests-0123456789';

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** A free port nobody listens on: bind, read the port, close. */
async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await listen(s);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

function call(port: number, headers: Record<string, string>, path = '/', method = 'GET', body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('node proxy', () => {
  let upstream: Server;
  let upstreamPort: number;
  let proxy: Server;
  let proxyPort: number;
  const seen: IncomingMessage['headers'][] = [];
  const tunnels = new Set<Duplex>();

  before(async () => {
    upstream = createServer((req, res) => {
      seen.push(req.headers);
      if (req.url === '/stream') {
        // Streams: answer each request chunk as it arrives, so the test proves both directions flow.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.flushHeaders();
        req.on('data', (c: Buffer) => res.write(`echo:${c.toString()}`));
        req.on('end', () => res.end('done'));
        return;
      }
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'yes' });
        res.end(JSON.stringify({ method: req.method, url: req.url, body }));
      });
    });
    upstream.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      tunnels.add(socket);
      socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n');
      if (head.length) socket.write(head);
      socket.on('data', (c: Buffer) => socket.write(Buffer.concat([Buffer.from('ws:'), c])));
    });
    upstreamPort = await listen(upstream);
    proxy = createNodeProxy({
      nodeToken: TOKEN,
      lookup: (id) => (id === 'sbx-here' || id === 'sbx-masked' ? '127.0.0.1' : undefined),
      maskOf: (id) => (id === 'sbx-masked' ? 'localhost:${PORT}' : ''),
      log: createLogger('silent'),
    });
    proxyPort = await listen(proxy);
  });

  after(async () => {
    for (const t of tunnels) t.destroy();
    proxy.closeAllConnections();
    upstream.closeAllConnections();
    await Promise.all([new Promise((r) => proxy.close(r)), new Promise((r) => upstream.close(r))]);
  });

  const route = (port: number, id = 'sbx-here'): Record<string, string> => ({
    'cove-node-token': TOKEN,
    'e2b-sandbox-id': id,
    'e2b-sandbox-port': String(port),
  });

  it('refuses requests without the node token or with a wrong one', async () => {
    const missing = await call(proxyPort, { 'e2b-sandbox-id': 'sbx-here', 'e2b-sandbox-port': String(upstreamPort) });
    assert.equal(missing.status, 401);
    assert.equal(JSON.parse(missing.body).code, 401);
    const wrong = await call(proxyPort, { ...route(upstreamPort), 'cove-node-token': 'nope' });
    assert.equal(wrong.status, 401);
  });

  it('forwards a request with its body and strips the node token', async () => {
    const r = await call(proxyPort, { ...route(upstreamPort), 'x-custom': 'kept' }, '/a/b?c=d', 'POST', 'hello');
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-upstream'], 'yes');
    assert.deepEqual(JSON.parse(r.body), { method: 'POST', url: '/a/b?c=d', body: 'hello' });
    const last = seen.at(-1)!;
    assert.equal(last['cove-node-token'], undefined);
    assert.equal(last['x-custom'], 'kept');
  });

  it('maskRequestHost: the sandbox sees the mask with its port, whatever Host the client sent; others keep theirs', async () => {
    const masked = await call(proxyPort, { ...route(upstreamPort, 'sbx-masked'), host: `8080-sbx-masked.evil.example` });
    assert.equal(masked.status, 200);
    assert.equal(seen.at(-1)!.host, `localhost:${upstreamPort}`);
    const plain = await call(proxyPort, { ...route(upstreamPort), host: 'kept.example' });
    assert.equal(plain.status, 200);
    assert.equal(seen.at(-1)!.host, 'kept.example');
  });

  it('answers 502 "sandbox was not found" for a sandbox on no node', async () => {
    const r = await call(proxyPort, route(upstreamPort, 'sbx-elsewhere'));
    assert.equal(r.status, 502);
    assert.deepEqual(JSON.parse(r.body), { message: 'The sandbox was not found', sandboxId: 'sbx-elsewhere', code: 502 });
  });

  it('answers 502 "port is not open" for a closed port', async () => {
    const port = await closedPort();
    const r = await call(proxyPort, route(port));
    assert.equal(r.status, 502);
    assert.deepEqual(JSON.parse(r.body), {
      message: 'The sandbox is running but port is not open',
      sandboxId: 'sbx-here',
      port,
      code: 502,
    });
  });

  it('refuses envd-internal paths on port 49983 with 404 JSON', async () => {
    for (const path of ['/init', '/metrics', '/init/', '//init', '/%69nit', '/a/../init', '/metrics?x=1', '/cove/logs', '/cove/logs?after=0']) {
      const r = await call(proxyPort, route(49983), path, path.startsWith('/init') ? 'POST' : 'GET');
      assert.equal(r.status, 404, path);
      assert.equal(JSON.parse(r.body).code, 404);
    }
  });

  it('rejects missing or malformed routing headers with 400', async () => {
    const r = await call(proxyPort, { 'cove-node-token': TOKEN, 'e2b-sandbox-id': 'sbx-here', 'e2b-sandbox-port': 'x' });
    assert.equal(r.status, 400);
  });

  it('streams request and response bodies both ways', async () => {
    const req = request({ host: '127.0.0.1', port: proxyPort, path: '/stream', method: 'POST', headers: route(upstreamPort) });
    const responded = once(req, 'response');
    req.write('one');
    const [res] = (await responded) as [IncomingMessage];
    assert.equal(res.statusCode, 200);
    res.setEncoding('utf8');
    const chunks: string[] = [];
    const next = async (): Promise<string> => {
      const [c] = (await once(res, 'data')) as [string];
      return c;
    };
    // Each chunk is echoed before the next one is sent: the proxy must not buffer either direction.
    chunks.push(await next());
    req.write('two');
    chunks.push(await next());
    req.end();
    await once(res, 'end');
    assert.deepEqual(chunks, ['echo:one', 'echo:two']);
  });

  it('tunnels upgraded (WebSocket) connections', async () => {
    const req = request({
      host: '127.0.0.1',
      port: proxyPort,
      path: '/ws',
      headers: { ...route(upstreamPort), connection: 'Upgrade', upgrade: 'websocket' },
    });
    req.end();
    const [res, socket] = (await once(req, 'upgrade')) as [IncomingMessage, Duplex];
    assert.equal(res.statusCode, 101);
    socket.write('ping');
    const [data] = (await once(socket, 'data')) as [Buffer];
    assert.equal(data.toString(), 'ws:ping');
    socket.destroy();
  });

  it('answers an upgrade to an unknown sandbox with the 502 JSON', async () => {
    const req = request({
      host: '127.0.0.1',
      port: proxyPort,
      path: '/ws',
      headers: { ...route(upstreamPort, 'sbx-gone'), connection: 'Upgrade', upgrade: 'websocket' },
    });
    req.end();
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    assert.equal(res.statusCode, 502);
    let body = '';
    res.setEncoding('utf8');
    for await (const c of res) body += c;
    assert.equal(JSON.parse(body).message, 'The sandbox was not found');
  });
});


describe('node proxy: envd-internal paths in any spelling', () => {
  // A stand-in envd on the real envd port, on a loopback address of its own so it cannot meet another test's.
  const address = `127.${10 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 250)}.${2 + Math.floor(Math.random() * 250)}`;
  let envd: Server;
  let proxy: Server;
  let proxyPort: number;
  const reached: string[] = [];

  before(async () => {
    envd = createServer((req, res) => {
      reached.push(`${req.method} ${req.url}`);
      res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
      res.end('envd');
    });
    envd.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
      reached.push(`UPGRADE ${req.url}`);
      socket.end('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n');
    });
    envd.listen(49983, address);
    await once(envd, 'listening');
    proxy = createNodeProxy({ nodeToken: TOKEN, lookup: (id) => (id === 'sbx-envd' ? address : undefined), log: createLogger('silent') });
    proxyPort = await listen(proxy);
  });
  after(async () => {
    proxy.closeAllConnections();
    envd.closeAllConnections();
    await Promise.all([new Promise((r) => proxy.close(r)), new Promise((r) => envd.close(r))]);
  });

  const envdRoute = { host: 'sandbox', 'cove-node-token': TOKEN, 'e2b-sandbox-id': 'sbx-envd', 'e2b-sandbox-port': '49983' };

  it('refuses every spelling of /init and the other internal routes, and envd never sees them', async () => {
    const targets = [
      'http://x/init',
      'HTTP://X/INIT?x=1',
      'https://sandbox:49983/init',
      'http://x//init',
      'http://x/a/../init',
      'http://x/%69nit',
      '/init',
      '/init?',
      '/init#frag',
      '/./init',
      '//init',
      '///init/',
      '/INIT',
      '/Init',
      '/%69nit',
      '/%2569nit',
      '/%2finit',
      '/%2e/init',
      '/a/%2e%2e/init',
      '/init/anything',
      '/metrics',
      '/upgrade',
      '/FSFREEZE',
      '/cove/logs',
      '/cove/logs?after=0&limit=1000',
      '/COVE/LOGS',
      '//cove//logs',
      '/%63ove/logs',
      '/cove%2flogs',
      '/x/../cove/logs',
      'http://x/cove/logs',
    ];
    for (const target of targets) {
      const status = await rawHttpStatus(proxyPort, `POST ${target} HTTP/1.1`, { ...envdRoute, 'content-length': '0' });
      assert.equal(status, 404, target);
    }
    // The log ring is read with GET by the node; from outside it is refused the same way.
    for (const target of ['/cove/logs?after=0', '/%63ove/logs', 'http://x/cove/logs']) {
      assert.equal(await rawHttpStatus(proxyPort, `GET ${target} HTTP/1.1`, envdRoute), 404, target);
    }
    // Asterisk-form and other targets that are neither a path nor an http URL are not forwarded at all.
    for (const target of ['*', 'init', 'ftp://x/init']) {
      assert.equal(await rawHttpStatus(proxyPort, `OPTIONS ${target} HTTP/1.1`, envdRoute), 400, target);
    }
    // A WebSocket upgrade takes the same check.
    assert.equal(await rawHttpStatus(proxyPort, 'GET http://x/init HTTP/1.1', { ...envdRoute, connection: 'upgrade', upgrade: 'websocket' }), 404);
    assert.deepEqual(reached, [], 'envd saw none of them');
  });

  it('forwards public envd routes, an absolute-form target as its path and query', async () => {
    assert.equal(await rawHttpStatus(proxyPort, 'GET /health HTTP/1.1', envdRoute), 200);
    assert.equal(await rawHttpStatus(proxyPort, 'GET http://sandbox/files?path=%2Finit HTTP/1.1', envdRoute), 200);
    assert.equal(await rawHttpStatus(proxyPort, 'GET /initialise HTTP/1.1', envdRoute), 200);
    assert.deepEqual(reached, ['GET /health', 'GET /files?path=%2Finit', 'GET /initialise']);
  });
});
