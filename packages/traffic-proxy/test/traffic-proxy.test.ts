import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { EventEmitter, once } from 'node:events';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { Agent as UndiciAgent, type Dispatcher } from 'undici';
import {
  MAX_BUFFERED_BODY_BYTES,
  createUpstreamDispatcher,
  forwardHttp,
  forwardRequestHeaders,
  parseSandboxHost,
  portClosedBody,
  resolveSandboxRoute,
  type ForwardResult,
} from '../src/index.js';

/** Write `data` on a raw connection to `url`'s port, call `then` with the socket, and collect all it receives until it closes. */
function rawExchange(url: string, data: string, then?: (socket: Socket) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => resolve(text));
    socket.write(data, () => then?.(socket));
  });
}

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
      if (req.url?.startsWith('/refuse-early')) {
        // Refuses a body it never reads (a full disk, a server that ignores unwanted bodies): the rest of the
        // body stays in the connection's buffers.
        req.once('data', () => req.pause());
        res.writeHead(507, { 'content-length': '4' });
        res.end('full');
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

  it('drops the rest of a body the upstream answered before reading, so the next request on the connection is served', { timeout: 10_000 }, async () => {
    // A client that hands its whole upload to the socket at once and keeps the connection for its next request.
    const big = 16 * 1024 * 1024;
    const socket = connect(Number(new URL(proxyUrl).port), '127.0.0.1');
    let received = '';
    const answers = () => received.match(/HTTP\/1\.1 \d{3}/g) ?? [];
    const both = new Promise<void>((resolve, reject) => {
      socket.setEncoding('latin1').on('data', (c: string) => {
        received += c;
        if (answers().length === 2 && received.endsWith('0\r\n\r\n')) resolve();
      });
      socket.on('error', reject);
    });
    socket.write(`POST /refuse-early HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n${big.toString(16)}\r\n`);
    socket.write(Buffer.alloc(big, 1));
    socket.write('\r\n0\r\n\r\nPOST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok');
    try {
      await both;
      assert.deepEqual(answers(), ['HTTP/1.1 507', 'HTTP/1.1 200']);
    } finally {
      socket.destroy();
    }
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

describe('forwardHttp through an undici dispatcher (body-less requests and small declared bodies)', () => {
  let proxy: Server;
  let upstream: Server;
  let proxyUrl: string;
  let dispatched = 0;
  let dispatcher: Dispatcher;
  /** Request targets the upstream received a head for, and the requests it received whole. */
  const heads: string[] = [];
  const bodies: { url: string; method: string; declared: string | undefined; body: string }[] = [];
  /** Emits (url, ForwardResult) when the proxy's forwardHttp for that request target resolved, and 'request' (url) when it began. */
  const exchanges = new EventEmitter();
  const outcomeOf = (url: string): Promise<ForwardResult> =>
    new Promise((resolve) => {
      const on = (u: string, r: ForwardResult): void => {
        if (u !== url) return;
        exchanges.off('done', on);
        resolve(r);
      };
      exchanges.on('done', on);
    });
  /** Resolves when the upstream sees the client side of /stream go away. */
  let streamClosed: Promise<void>;
  before(async () => {
    let onStreamClosed!: () => void;
    streamClosed = new Promise((r) => (onStreamClosed = r));
    upstream = createServer((req, res) => {
      heads.push(req.url ?? '');
      if (req.url?.startsWith('/body')) {
        // Echoes the body it got, and what the proxy declared for it.
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          const body = Buffer.concat(chunks);
          bodies.push({ url: req.url ?? '', method: req.method ?? '', declared: req.headers['content-length'], body: body.toString('latin1') });
          res.writeHead(200, { 'content-length': body.length });
          res.end(body);
        });
        return;
      }
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
      const url = req.url ?? '';
      exchanges.emit('request', url);
      // /body/held: the caller awaits something (like the edge's resume wait) until the client's connection is gone.
      const held = url.startsWith('/body/held') ? once(req.socket, 'close') : Promise.resolve();
      void held.then(() => forwardHttp(req, res, {
        target: `http://127.0.0.1:${port}`,
        headers: forwardRequestHeaders(req.headers, { remove: ['x-secret'] }),
        dispatcher,
        idleTimeoutMs: url === '/silent' ? 300 : url.startsWith('/body/trickle') || url.startsWith('/body/held') ? 500 : 10_000,
        onError: (_err, failure) => {
          res.writeHead(502, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ message: failure, code: 502 }));
        },
      })).then((r) => exchanges.emit('done', url, r));
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

  it('keeps a chunked body on node:http, head first', async () => {
    const before = dispatched;
    const res = await fetch(`${proxyUrl}/body/chunked`, { method: 'POST', body: new Blob(['hel', 'lo']).stream(), duplex: 'half' } as RequestInit);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'hello');
    assert.equal(dispatched, before, 'a streamed body does not go through the dispatcher');
  });

  it('sends a small declared body (an SDK Connect call) through the dispatcher, intact', async () => {
    const before = dispatched;
    const body = JSON.stringify({ process: { cmd: '/bin/bash', args: ['-l', '-c', 'true'] }, stdin: false });
    const res = await fetch(`${proxyUrl}/body/connect`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), body);
    assert.equal(dispatched, before + 1);
    assert.deepEqual(bodies.at(-1), { url: '/body/connect', method: 'POST', declared: String(body.length), body });
  });

  it('sends a declared body with any method, GET included', async () => {
    for (const method of ['GET', 'PUT', 'DELETE', 'PATCH']) {
      const before = dispatched;
      const echoed = await new Promise<string>((resolve, reject) => {
        const req = request(`${proxyUrl}/body/${method}`, { method, headers: { 'content-length': '4' } }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve(text));
        });
        req.on('error', reject);
        req.end('data');
      });
      assert.equal(echoed, 'data', method);
      assert.equal(dispatched, before + 1, method);
      assert.deepEqual(bodies.at(-1), { url: `/body/${method}`, method, declared: '4', body: 'data' });
    }
  });

  it('buffers a body of exactly the bound and streams one byte more on node:http', async () => {
    for (const size of [MAX_BUFFERED_BODY_BYTES, MAX_BUFFERED_BODY_BYTES + 1]) {
      const before = dispatched;
      const body = Buffer.alloc(size, 'x');
      body[size - 1] = 'y'.charCodeAt(0);
      const res = await fetch(`${proxyUrl}/body/size-${size}`, { method: 'POST', body });
      assert.equal(res.status, 200);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(body), `${size} bytes arrive intact`);
      assert.equal(dispatched, before + (size <= MAX_BUFFERED_BODY_BYTES ? 1 : 0), `${size} bytes`);
    }
  });

  it('keeps a request with Expect: 100-continue on node:http', async () => {
    const before = dispatched;
    const echoed = await new Promise<string>((resolve, reject) => {
      const req = request(`${proxyUrl}/body/expect`, { method: 'POST', headers: { expect: '100-continue', 'content-length': '5' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(text));
      });
      req.on('continue', () => req.end('hello'));
      req.on('error', reject);
    });
    assert.equal(echoed, 'hello');
    assert.equal(dispatched, before);
  });

  it('forwards no more than the declared length: extra bytes are the next request or a 400, never this body', async () => {
    const before = dispatched;
    // Garbage after the declared body, in the same packet: Node's parser fails on it and the connection gets a
    // 400 — whether the first request got out before that is a race, but if it did, with its five bytes only.
    const garbage = await rawExchange(proxyUrl, 'POST /body/over HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloEXTRA BYTES NOT HTTP\r\n\r\n');
    assert.match(garbage, /HTTP\/1\.1 400 /);
    assert.doesNotMatch(garbage, /EXTRA/);
    // A request hidden after the body stays a request of its own upstream, with its own framing.
    const smuggled = await rawExchange(
      proxyUrl,
      'POST /body/over2 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloPOST /body/hidden HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc',
    );
    assert.match(smuggled, /^HTTP\/1\.1 200 [^]*\r\n\r\nhelloHTTP\/1\.1 200 [^]*\r\n\r\nabc$/);
    for (const b of bodies.filter((b) => b.url === '/body/over')) assert.deepEqual(b, { url: '/body/over', method: 'POST', declared: '5', body: 'hello' });
    assert.deepEqual(
      bodies.filter((b) => ['/body/over2', '/body/hidden'].includes(b.url)),
      [
        { url: '/body/over2', method: 'POST', declared: '5', body: 'hello' },
        { url: '/body/hidden', method: 'POST', declared: '3', body: 'abc' },
      ],
    );
    assert.ok(dispatched >= before + 2);
  });

  for (const [name, close] of [
    ['closes its side after a short body', (s: Socket) => s.end()],
    ['aborts mid-body', (s: Socket) => s.resetAndDestroy()],
  ] as const) {
    it(`sends nothing upstream when the client ${name}`, async () => {
      const url = `/body/partial-${name.split(' ')[0]}`;
      const before = dispatched;
      const outcome = outcomeOf(url);
      const started = once(exchanges, 'request');
      // Ten of the hundred declared bytes, then the client goes once the proxy is handling the request.
      const text = rawExchange(proxyUrl, `POST ${url} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789`, (socket) => {
        void started.then(() => close(socket));
      }).catch(() => '');
      assert.equal((await outcome).outcome, 'client_aborted');
      // Nothing from the upstream: at most Node's own 400 for a body cut short by the client's FIN.
      assert.match(await text, /^(|HTTP\/1\.1 400 Bad Request\r\n[^]*)$/);
      // A full round trip through the proxy and upstream after the outcome: anything sent for `url` would have landed.
      assert.equal((await fetch(`${proxyUrl}/plain`)).status, 200);
      assert.equal(dispatched, before + 1, 'only the /plain request was dispatched');
      assert.ok(!heads.includes(url), 'the upstream never saw the partial request');
    });
  }

  it('ends at once, sending nothing, when the client left while the caller was still routing', async () => {
    const url = '/body/held';
    const outcome = outcomeOf(url);
    const started = once(exchanges, 'request');
    // The whole body is sent; the client leaves before the caller gets to forward it.
    await rawExchange(proxyUrl, `POST ${url} HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello`, (socket) => {
      void started.then(() => socket.destroy());
    });
    // Not the body time limit (500 ms here) running out on a connection that is long gone.
    assert.equal((await outcome).outcome, 'client_aborted');
    assert.equal((await fetch(`${proxyUrl}/plain`)).status, 200);
    assert.ok(!heads.includes(url));
  });

  it('cuts a client trickling its body at the time bound with a 408, and sends nothing upstream', { timeout: 10_000 }, async () => {
    const url = '/body/trickle';
    const outcome = outcomeOf(url);
    let timer: NodeJS.Timeout | undefined;
    // A byte every 20 ms is never idle for the 500 ms limit, but 1000 bytes take 20 s: only a total limit cuts it.
    const text = await rawExchange(proxyUrl, `POST ${url} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n`, (socket) => {
      timer = setInterval(() => {
        if (socket.writable) socket.write('x');
      }, 20);
      socket.on('close', () => clearInterval(timer));
    });
    clearInterval(timer);
    assert.match(text, /^HTTP\/1\.1 408 /);
    assert.match(text, /\r\nconnection: close\r\n/i);
    assert.deepEqual(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)), { message: 'The request body did not arrive in time', code: 408 });
    const r = await outcome;
    assert.equal(r.outcome, 'client_timeout');
    assert.equal((r.error as { code?: string }).code, 'CLIENT_BODY_TIMEOUT');
    assert.ok(!heads.includes(url), 'the upstream never saw the trickled request');
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
