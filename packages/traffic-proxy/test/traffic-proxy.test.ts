import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import {
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
