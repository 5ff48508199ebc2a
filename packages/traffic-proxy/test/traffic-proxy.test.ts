import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Agent as UndiciAgent, type Dispatcher } from 'undici';
import {
  createUpstreamDispatcher,
  forwardHttp,
  forwardRequestHeaders,
  parseSandboxHost,
  portClosedBody,
  resolveSandboxRoute,
} from '../src/index.js';

describe('routing', () => {
  it('parses <port>-<id>.<domain> and the legacy client-id form', () => {
    assert.deepEqual(parseSandboxHost('49983-abc123.cove.test', 'cove.test'), { ok: true, sandboxId: 'abc123', port: 49983, via: 'host' });
    assert.deepEqual(parseSandboxHost('8080-abc-client1.cove.test:443', 'cove.test'), { ok: true, sandboxId: 'abc', port: 8080, via: 'host' });
  });
  it('rejects malformed hosts, ids and ports', () => {
    for (const host of ['cove.test', 'x.y.cove.test', '0-abc.cove.test', '70000-abc.cove.test', '80-a_b.cove.test', '80-abc.other.test', '80.cove.test']) {
      assert.equal(parseSandboxHost(host, 'cove.test').ok, false, host);
    }
  });
  it('uses headers only for IP, localhost and sandbox.<domain> hosts', () => {
    const h = { 'e2b-sandbox-id': 'abc', 'e2b-sandbox-port': '49983' };
    for (const host of ['127.0.0.1:3002', '[::1]:3002', 'localhost', 'sandbox.cove.test']) {
      assert.deepEqual(resolveSandboxRoute({ ...h, host }, 'cove.test'), { ok: true, sandboxId: 'abc', port: 49983, via: 'headers' });
    }
    assert.deepEqual(resolveSandboxRoute({ ...h, host: '80-zzz.cove.test' }, 'cove.test'), { ok: true, sandboxId: 'zzz', port: 80, via: 'host' });
    assert.equal(resolveSandboxRoute({ host: '127.0.0.1' }, 'cove.test').ok, false);
  });
});

describe('forwardHttp', () => {
  let proxy: Server;
  let upstream: Server;
  let proxyUrl: string;
  before(async () => {
    upstream = createServer((req, res) => {
      if (req.url?.startsWith('/early')) {
        // Answers before reading any body, like a bidirectional stream over HTTP/1.1.
        res.writeHead(200, { 'x-early': '1' });
        res.flushHeaders();
        req.pipe(res);
        return;
      }
      res.setHeader('x-seen-host', req.headers.host ?? '');
      res.setHeader('x-seen-secret', String(req.headers['x-secret'] ?? ''));
      req.pipe(res);
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const upPort = (upstream.address() as AddressInfo).port;
    // A port that refuses: bind, note it, close.
    const dead = createServer();
    dead.listen(0, '127.0.0.1');
    await once(dead, 'listening');
    const deadPort = (dead.address() as AddressInfo).port;
    await new Promise((r) => dead.close(r));
    proxy = createServer((req, res) => {
      const port = req.url?.startsWith('/dead') ? deadPort : upPort;
      void forwardHttp(req, res, {
        target: `http://127.0.0.1:${port}`,
        headers: forwardRequestHeaders(req.headers, { remove: ['x-secret'] }),
        onError: (_err, failure) => {
          res.writeHead(502, { 'content-type': 'application/json' });
          res.end(JSON.stringify(failure === 'refused' ? portClosedBody('abc', port) : { message: 'other', code: 502 }));
        },
      });
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });
  after(async () => {
    proxy.closeAllConnections();
    upstream.closeAllConnections();
    await Promise.all([new Promise((r) => proxy.close(r)), new Promise((r) => upstream.close(r))]);
  });

  it('streams a body through, keeps Host and drops removed headers', async () => {
    const res = await fetch(`${proxyUrl}/echo`, { method: 'POST', body: 'hello', headers: { 'x-secret': 's' } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'hello');
    assert.equal(res.headers.get('x-seen-host'), new URL(proxyUrl).host);
    assert.equal(res.headers.get('x-seen-secret'), '');
  });

  it('sends the request head before any body, so an upstream can answer first', async () => {
    const echoed = await new Promise<string>((resolve, reject) => {
      const req = request(`${proxyUrl}/early`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        assert.equal(res.headers['x-early'], '1');
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(body));
        // Only now, with the response under way, does the client send its body.
        req.end('ping');
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    assert.equal(echoed, 'ping');
  });

  it('reports a refused upstream to onError', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      request(`${proxyUrl}/dead`, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(status, 502);
    const res = await fetch(`${proxyUrl}/dead`);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.message, 'The sandbox is running but port is not open');
    assert.equal(body.code, 502);
  });
});

describe('forwardHttp through an undici dispatcher (body-less requests)', () => {
  let proxy: Server;
  let upstream: Server;
  let proxyUrl: string;
  let dispatched = 0;
  let dispatcher: Dispatcher;
  /** Resolves when the upstream sees the client side of /stream go away. */
  let streamClosed: Promise<void>;
  before(async () => {
    let onStreamClosed!: () => void;
    streamClosed = new Promise((r) => (onStreamClosed = r));
    upstream = createServer((req, res) => {
      if (req.url === '/silent') return; // never answers
      if (req.url === '/huge-head') {
        // A hostile upstream's endless head: the proxy must give up at its bound, not buffer it.
        res.writeHead(200, { 'x-pad': 'a'.repeat(1024 * 1024) });
        res.end();
        return;
      }
      if (req.url === '/truncated') {
        // Chunked, so only the proxy's reset (not a length mismatch) tells the client the body is cut short.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('the first part');
        setImmediate(() => res.socket?.destroy());
        return;
      }
      if (req.url === '/stream') {
        // An endless body: only a client that leaves (and a proxy that passes that on) ends it.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(64 * 1024, 1);
        const pump = (): void => {
          while (res.write(chunk));
        };
        res.on('drain', pump);
        res.on('close', onStreamClosed);
        pump();
        return;
      }
      if (req.url === '/big') {
        const body = Buffer.alloc(8 * 1024 * 1024, 7);
        res.writeHead(200, { 'content-length': String(body.length) });
        res.end(body);
        return;
      }
      req.resume();
      res.setHeader('x-seen-host', req.headers.host ?? '');
      res.setHeader('x-seen-secret', String(req.headers['x-secret'] ?? ''));
      res.setHeader('x-seen-method', req.method ?? '');
      res.setHeader('connection', 'keep-alive, x-hop');
      res.setHeader('x-hop', 'must not cross');
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.end('hello');
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const upPort = (upstream.address() as AddressInfo).port;
    const dead = createServer();
    dead.listen(0, '127.0.0.1');
    await once(dead, 'listening');
    const deadPort = (dead.address() as AddressInfo).port;
    await new Promise((r) => dead.close(r));
    // The real dispatcher, counting what it is given, so each test knows which path a request took.
    const real = createUpstreamDispatcher();
    dispatcher = real.compose((dispatch) => (o, h) => {
      dispatched++;
      return dispatch(o, h);
    });
    proxy = createServer((req, res) => {
      const port = req.url?.startsWith('/dead') ? deadPort : upPort;
      void forwardHttp(req, res, {
        target: `http://127.0.0.1:${port}`,
        headers: forwardRequestHeaders(req.headers, { remove: ['x-secret'] }),
        dispatcher,
        idleTimeoutMs: req.url === '/silent' ? 300 : 10_000,
        onError: (_err, failure) => {
          res.writeHead(502, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ message: failure, code: 502 }));
        },
      });
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    assert.ok(real instanceof UndiciAgent);
  });
  after(async () => {
    proxy.closeAllConnections();
    upstream.closeAllConnections();
    await Promise.all([new Promise((r) => proxy.close(r)), new Promise((r) => upstream.close(r)), dispatcher.close()]);
  });

  it('forwards a GET with the same header rules as the node:http path', async () => {
    const before = dispatched;
    const res = await fetch(`${proxyUrl}/plain`, { headers: { 'x-secret': 's' } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'hello');
    assert.equal(dispatched, before + 1, 'a body-less request goes through the dispatcher');
    assert.equal(res.headers.get('x-seen-host'), new URL(proxyUrl).host);
    assert.equal(res.headers.get('x-seen-secret'), '');
    assert.equal(res.headers.get('x-hop'), null, 'a header the upstream named in Connection does not cross');
    assert.deepEqual(res.headers.getSetCookie(), ['a=1', 'b=2']);
  });

  it('keeps requests with a body on node:http, head first', async () => {
    const before = dispatched;
    const res = await fetch(`${proxyUrl}/echo`, { method: 'POST', body: 'hello' });
    assert.equal(res.status, 200);
    await res.text();
    assert.equal(dispatched, before, 'a request with a body does not go through the dispatcher');
  });

  it('streams a large body intact', async () => {
    const res = await fetch(`${proxyUrl}/big`);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(body.length, 8 * 1024 * 1024);
    assert.ok(body.every((b) => b === 7));
  });

  it('ends an endless upstream body when the client leaves', { timeout: 10_000 }, async () => {
    const ac = new AbortController();
    const res = await fetch(`${proxyUrl}/stream`, { signal: ac.signal });
    const reader = res.body!.getReader();
    await reader.read();
    ac.abort();
    await streamClosed; // the upstream exchange is torn down, not left pumping into a full buffer
  });

  it('does not pass a truncated upstream body off as complete', async () => {
    await assert.rejects(async () => {
      const res = await fetch(`${proxyUrl}/truncated`);
      await res.arrayBuffer();
    });
  });

  it('refuses an upstream response head beyond the header bound', async () => {
    const before = dispatched;
    const res = await fetch(`${proxyUrl}/huge-head`);
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('x-pad'), null);
    assert.equal(dispatched, before + 1);
  });

  it('reports a refused upstream and an idle one to onError with their kinds', async () => {
    const refused = await fetch(`${proxyUrl}/dead`);
    assert.equal(refused.status, 502);
    assert.equal(((await refused.json()) as { message: string }).message, 'refused');
    const idle = await fetch(`${proxyUrl}/silent`);
    assert.equal(idle.status, 502);
    assert.equal(((await idle.json()) as { message: string }).message, 'timeout');
  });
});
