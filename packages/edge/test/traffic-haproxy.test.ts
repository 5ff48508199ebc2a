// The traffic port served by HAProxy (traffic/haproxy/*): a real HAProxy the real edge supervises, in front
// of stand-in node proxies. What HAProxy routes itself (public running sandboxes, by Host or headers), what it
// hands to the Node fallback (everything else, with the exact JSON answers), spoofed routing and node headers,
// the route taken away before a Pause or Delete reaches the node, a killed HAProxy, WebSockets, the fallback's
// own door, an upload the node answers before it is all sent.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, Agent, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { CreateRequestSchema, DeleteRequestSchema, PauseRequestSchema } from '@cove/contracts/orchestrator';
import { eventually } from '@cove/test-support/eventually';
import { rawHttpExchange } from '@cove/test-support/raw-http';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';
import { networkNamespaceId, portClosedBody, sandboxNotFoundBody } from '@cove/traffic-proxy';
import { ENVD_PORT } from '@cove/contracts/sandbox';
import { WebSocket } from 'undici';
import { runFiles } from '../src/traffic/haproxy/haproxy-supervisor.js';
import { runtimeCommand } from '../src/traffic/haproxy/runtime-socket.js';
import { FakeNode } from './fixtures/fake-node.js';
import { create, DOMAIN, linkHeaders, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { send } from './fixtures/http-client.js';
import { startVolumeEdge, type VolumeEdge } from './fixtures/volume-edge.js';

/** Requests each HAProxy backend of the edge whose run directory is `runDir` has taken so far (runtime API stats). */
async function served(runDir: string): Promise<{ nodes: number; fallback: number; direct: number }> {
  const csv = await runtimeCommand(runFiles(runDir).socketPath, ['show stat']);
  const count = (backend: string) => Number(csv.split('\n').find((l) => l.startsWith(`${backend},BACKEND,`))?.split(',')[7] ?? NaN);
  return { nodes: count('nodes'), fallback: count('fallback'), direct: count('direct') };
}

/** Run `fn` and say which backend took the requests it made. */
async function viaBackend(runDir: string, fn: () => Promise<unknown>): Promise<'nodes' | 'fallback' | 'direct' | 'several' | 'none'> {
  const before = await served(runDir);
  await fn();
  const now = await served(runDir);
  const took = (['nodes', 'fallback', 'direct'] as const).filter((b) => now[b] > before[b]);
  return took.length > 1 ? 'several' : (took[0] ?? 'none');
}

describe('edge traffic port served by HAProxy', () => {
  let edge: RunningEdge;
  let nodeA: FakeNode;
  let nodeB: FakeNode;
  let url: string;
  let port: number;
  let runDir: string;
  const route = (id: string, p: number | string, extra: Record<string, string> = {}) => ({ 'e2b-sandbox-id': id, 'e2b-sandbox-port': String(p), ...extra });
  const files = () => runFiles(runDir);

  const via = (fn: () => Promise<unknown>) => viaBackend(runDir, fn);

  async function createOn(node: FakeNode, id: string, trafficToken?: string): Promise<void> {
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: id } }), {
      headers: linkHeaders(node.opts.nodeId, { 'cove-sandbox-id': id, ...(trafficToken ? { 'cove-traffic-access-token': trafficToken } : {}) }),
    });
  }

  before(async () => {
    runDir = mkdtempSync(join(tmpdir(), 'cove-edge-hp-'));
    edge = await startEdge({ COVE_EDGE_RUN_DIR: runDir, COVE_TRAFFIC_PROXY: 'haproxy' });
    assert.equal(edge.trafficProxy, 'haproxy', 'haproxy is installed (cove up installs it): the edge asked for it must use it');
    nodeA = await new FakeNode({ nodeId: 'node-a' }).start();
    nodeB = await new FakeNode({ nodeId: 'node-b' }).start();
    await nodeA.heartbeat(edge.apiUrl);
    await nodeB.heartbeat(edge.apiUrl);
    url = edge.trafficUrl;
    port = edge.trafficPort;
    await createOn(nodeA, 'puba');
    await createOn(nodeB, 'pubb');
    await createOn(nodeA, 'priva', 'traffic-secret-a');
  });
  after(async () => {
    await edge.close();
    await nodeA.close();
    await nodeB.close();
    rmSync(runDir, { recursive: true, force: true });
  });

  it('keeps its files private to the edge and its idle limits as the Node path has them', () => {
    assert.equal(statSync(runDir).mode & 0o777, 0o700);
    for (const f of [files().config, files().sandboxMapPath, files().nodeMapPath, files().directMapPath, files().pid]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
    assert.equal(statSync(files().socketPath).mode & 0o777, 0o600);
    const cfg = readFileSync(files().config, 'utf8');
    for (const t of ['client', 'server', 'tunnel']) assert.match(cfg, new RegExp(`timeout ${t} 610s`));
  });

  it('routes a public sandbox itself, by headers and by Host, with the node token and routing headers set', async () => {
    let seen: Record<string, string> = {};
    assert.equal(
      await via(async () => {
        const res = await send(`${url}/headers`, { headers: route('puba', 49983, { 'cove-node-token': 'spoofed', 'x-forwarded-for': '10.9.9.9' }) });
        assert.equal(res.status, 200, res.text);
        seen = res.json();
      }),
      'nodes',
    );
    assert.equal(seen['cove-node-token'], nodeA.nodeToken);
    assert.equal(seen['e2b-sandbox-id'], 'puba');
    assert.equal(seen['e2b-sandbox-port'], '49983');
    assert.equal(seen['x-forwarded-for'], '10.9.9.9, 127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-host'], new URL(url).host);
    assert.equal(seen['cove-edge-forwarder'], undefined);
    assert.equal(
      await via(async () => {
        const res = await send(`${url}/`, { headers: { host: '8080-pubb.cove.test', 'cove-node-token': nodeA.nodeToken } });
        assert.equal(res.text, 'hello from pubb:8080');
      }),
      'nodes',
    );
    assert.equal(nodeB.proxyHeaders.at(-1)?.['cove-node-token'], nodeB.nodeToken, 'node A token sent by the client is replaced by node B\'s');
  });

  it('keeps keep-alive requests on one client connection apart when they go to different nodes', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 6; i++) {
        const id = i % 2 === 0 ? 'puba' : 'pubb';
        const res = await new Promise<string>((resolve, reject) => {
          httpRequest(`${url}/`, { agent, headers: route(id, 3000) }, (r) => {
            let body = '';
            r.setEncoding('utf8').on('data', (c) => (body += c)).on('end', () => resolve(body));
          })
            .on('error', reject)
            .end();
        });
        assert.equal(res, `hello from ${id}:3000`);
      }
    } finally {
      agent.destroy();
    }
  });

  it('adds CORS headers to cross-origin answers, its own included, and leaves preflights to the fallback', async () => {
    const res = await send(`${url}/`, { headers: route('puba', 3000, { origin: 'https://app.example' }) });
    assert.equal(res.headers['access-control-allow-origin'], 'https://app.example');
    assert.match(String(res.headers['access-control-expose-headers']), /Content-Type/);
    assert.equal(res.headers.vary, 'Origin');
    let pre = 0;
    assert.equal(
      await via(async () => {
        const r = await send(`${url}/`, { method: 'OPTIONS', headers: route('puba', 3000, { origin: 'https://app.example', 'access-control-request-method': 'POST' }) });
        pre = r.status;
      }),
      'fallback',
    );
    assert.equal(pre, 204);
  });

  it('hands private and unknown sandboxes to the fallback, which answers as before', async () => {
    let status = 0;
    let body: unknown;
    assert.equal(
      await via(async () => {
        const r = await send(`${url}/`, { headers: route('priva', 8080) });
        status = r.status;
        body = r.json();
      }),
      'fallback',
    );
    assert.equal(status, 403);
    assert.equal((body as { code: number }).code, 403);
    assert.equal(await via(async () => assert.equal((await send(`${url}/`, { headers: route('priva', 8080, { 'e2b-traffic-access-token': 'traffic-secret-a' }) })).status, 200)), 'fallback');
    const unknown = await send(`${url}/`, { headers: route('nosuch', 8080) });
    assert.equal(unknown.status, 502);
    assert.deepEqual(unknown.json(), sandboxNotFoundBody('nosuch'));
    // The volume API host and the legacy Host form go the Node way too.
    assert.equal(await via(() => send(`${url}/`, { headers: { host: '3000-puba-client7.cove.test' } })), 'fallback');
    assert.equal(nodeA.proxyHeaders.at(-1)?.['e2b-sandbox-id'], 'puba');
    assert.equal(nodeA.proxyHeaders.at(-1)?.['cove-edge-forwarder'], undefined, 'the fallback secret never leaves the edge');
    assert.equal(nodeA.proxyHeaders.at(-1)?.['cove-client-address'], undefined);
  });

  it('never reaches another sandbox with spoofed or malformed routing', async () => {
    const before = nodeA.proxyHeaders.length + nodeB.proxyHeaders.length;
    const cases: { head: string[]; status: number; reaches?: string; parser?: true }[] = [
      // Host routing wins over the headers, as in resolveSandboxRoute: the header's id is replaced.
      { head: ['GET /headers HTTP/1.1', 'host: 8080-puba.cove.test', 'e2b-sandbox-id: pubb', 'e2b-sandbox-port: 80'], status: 200, reaches: 'puba' },
      { head: ['GET / HTTP/1.1', 'host: 127.0.0.1', 'e2b-sandbox-id: puba', 'e2b-sandbox-id: pubb', 'e2b-sandbox-port: 80'], status: 400 },
      { head: ['GET / HTTP/1.1', 'host: 127.0.0.1', 'e2b-sandbox-id: puba, pubb', 'e2b-sandbox-port: 80'], status: 400 },
      { head: ['GET / HTTP/1.1', 'host: 127.0.0.1', 'e2b-sandbox-id: puba', 'e2b-sandbox-port: 80', 'e2b-sandbox-port: 81'], status: 400 },
      { head: ['GET / HTTP/1.1', 'host: 127.0.0.1', 'e2b-sandbox-id: puba', 'e2b-sandbox-port: 65536'], status: 400 },
      { head: ['GET / HTTP/1.1', 'host: 127.0.0.1', 'e2b-sandbox-id: puba', 'e2b-sandbox-port: 0'], status: 400 },
      { head: ['GET / HTTP/1.1', 'host: 127.0.0.1', 'e2b-sandbox-id: puba', 'e2b-sandbox-port: 8o'], status: 400 },
      { head: ['GET / HTTP/1.1', 'host: 127.0.0.1', 'e2b-sandbox-id: PUBA', 'e2b-sandbox-port: 80'], status: 400 },
      { head: ['GET / HTTP/1.1', 'host: 99999-puba.cove.test'], status: 400 },
      { head: ['GET / HTTP/1.1', 'host: 80-puba.cove.test.evil'], status: 400 },
      // HAProxy's HTTP parser refuses these before any rule runs (its built-in 400 page, not JSON).
      { head: ['GET / HTTP/1.1', 'host: 80-puba.cove.test', 'host: 80-pubb.cove.test'], status: 400, parser: true },
      { head: ['GET http://80-pubb.cove.test/ HTTP/1.1', 'host: 80-puba.cove.test'], status: 400, parser: true },
      // Leading zeros are the fallback's to judge (it reads them as 8080 and routes the same sandbox).
      { head: ['GET /headers HTTP/1.1', 'host: 127.0.0.1', 'e2b-sandbox-id: pubb', 'e2b-sandbox-port: 08080'], status: 200, reaches: 'pubb' },
    ];
    for (const c of cases) {
      const got = await rawHttpExchange(port, c.head);
      const what = c.head.join(' | ');
      if (c.reaches) {
        assert.equal(got.status, c.status, what);
        assert.equal(JSON.parse(got.body)['e2b-sandbox-id'], c.reaches, what);
      } else {
        // HAProxy refuses some of these itself (400, in the same JSON shape); none reaches a node.
        assert.equal(got.status, c.status, `${what}: ${got.body}`);
        if (!c.parser) assert.equal(JSON.parse(got.body).code, c.status, what);
      }
    }
    const reached = nodeA.proxyHeaders.length + nodeB.proxyHeaders.length - before;
    assert.equal(reached, cases.filter((c) => c.reaches).length, 'only the cases that name a sandbox reach a node');
    const huge = await send(`${url}/`, { headers: route('puba', 49983, { 'x-big': 'a'.repeat(20_000) }) });
    assert.equal(huge.status, 431);
    assert.equal(huge.json().code, 431);
  });

  it('a wrong map entry reaches a node that does not run the sandbox, never another sandbox', async () => {
    // As if the map were stale: pubb's route points at node A.
    assert.equal((await runtimeCommand(files().socketPath, [`set map ${files().sandboxMapPath} pubb node-a`])).trim(), '');
    const res = await send(`${url}/headers`, { headers: route('pubb', 8080) });
    assert.equal(res.status, 502);
    assert.deepEqual(res.json(), sandboxNotFoundBody('pubb'));
    const seen = nodeA.proxyHeaders.at(-1)!;
    assert.equal(seen['e2b-sandbox-id'], 'pubb');
    assert.equal(seen['cove-node-token'], nodeA.nodeToken);
    assert.equal((await runtimeCommand(files().socketPath, [`set map ${files().sandboxMapPath} pubb node-b`])).trim(), '');
    assert.equal((await send(`${url}/`, { headers: route('pubb', 8080) })).text, 'hello from pubb:8080');
  });

  it('takes the route away before a Pause or a Delete reaches the node', async () => {
    await createOn(nodeA, 'pausea');
    await createOn(nodeA, 'killa');
    assert.equal(await via(() => send(`${url}/`, { headers: route('pausea', 8080) })), 'nodes');
    const during: { status: number; body: unknown; path: string }[] = [];
    const check = (id: string) => async () => {
      const before = await served(runDir);
      const r = await send(`${url}/`, { headers: route(id, 8080) });
      const now = await served(runDir);
      during.push({ status: r.status, body: r.status === 200 ? r.text : r.json(), path: now.fallback > before.fallback ? 'fallback' : 'nodes' });
    };
    nodeA.beforePause = check('pausea');
    try {
      await edge.sandboxClient.pause(create(PauseRequestSchema, { sandboxId: 'pausea', snapshotId: 'snap-pausea', memory: true }), { headers: linkHeaders('node-a', { 'cove-sandbox-id': 'pausea' }) });
    } finally {
      nodeA.beforePause = undefined;
    }
    assert.deepEqual(during, [{ status: 502, body: sandboxNotFoundBody('pausea'), path: 'fallback' }]);
    nodeA.beforeDelete = check('killa');
    try {
      await edge.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'killa' }), { headers: linkHeaders('node-a', { 'cove-sandbox-id': 'killa' }) });
    } finally {
      nodeA.beforeDelete = undefined;
    }
    // The fallback still finds the catalog entry (the node has not answered yet) and routes it itself.
    assert.equal(during[1]?.path, 'fallback');
    assert.equal(during[1]?.status, 200);
    assert.equal((await send(`${url}/`, { headers: route('killa', 8080) })).status, 502);
  });

  it('passes WebSocket upgrades through', async () => {
    const ws = new WebSocket(`ws://${new URL(url).host}/ws`, { headers: route('puba', 8080) } as any);
    await once(ws as any, 'open');
    const got = new Promise<string>((resolve) => ws.addEventListener('message', (e) => resolve(String(e.data)), { once: true }));
    ws.send('ping through haproxy');
    assert.match(await got, /ping through haproxy/);
    ws.close();
  });

  it('refuses requests on the fallback listener that did not come through HAProxy', async () => {
    const fallbackPort = Number(/server edge 127\.0\.0\.1:(\d+)/.exec(readFileSync(files().config, 'utf8'))?.[1]);
    const res = await rawHttpExchange(fallbackPort, ['GET / HTTP/1.1', 'host: 8080-puba.cove.test', 'cove-edge-forwarder: guess', 'cove-client-address: 10.0.0.1']);
    assert.equal(res.status, 403);
    assert.equal(JSON.parse(res.body).code, 403);
  });

  it('restarts a killed HAProxy with its maps from the catalog, and serves again', async () => {
    const supervisor = edge.edge.trafficProxy!;
    const first = supervisor.pid!;
    process.kill(first, 'SIGKILL');
    await eventually(async () => supervisor.pid !== undefined && supervisor.pid !== first && (await send(`${url}/`, { headers: route('puba', 8080) })).status === 200, 15_000, 'haproxy restarted', 50);
    assert.equal(await via(() => send(`${url}/`, { headers: route('pubb', 8080) })), 'nodes');
    assert.match(readFileSync(files().sandboxMapPath, 'utf8'), /^pubb node-b$/m);
    assert.doesNotMatch(readFileSync(files().sandboxMapPath, 'utf8'), /priva|pausea|killa/);
  });
});

describe('edge traffic port: COVE_TRAFFIC_PROXY', () => {
  for (const [what, binary] of [
    ['an HAProxy that fails its config check', '/bin/false'],
    ['no HAProxy at all', '/nonexistent/haproxy'],
  ] as const) {
    it(`serves the port from the Node server with ${what}`, async () => {
      const edge = await startEdge({ COVE_TRAFFIC_PROXY: 'haproxy' }, { haproxyBinary: binary });
      try {
        assert.equal(edge.trafficProxy, 'node');
        const res = await send(`${edge.trafficUrl}/`, { headers: { host: 'foo.example.com' } });
        assert.equal(res.status, 400);
        assert.equal(res.json().code, 400);
      } finally {
        await edge.close();
      }
    });
  }

  it('serves the port from the Node server alone when set to node', async () => {
    const edge = await startEdge({ COVE_TRAFFIC_PROXY: 'node' });
    try {
      assert.equal(edge.trafficProxy, 'node');
      assert.equal(edge.edge.trafficProxy, undefined);
      assert.equal((await send(`${edge.trafficUrl}/`, { headers: { host: 'foo.example.com' } })).status, 400);
    } finally {
      await edge.close();
    }
  });
});

describe('edge traffic port served by HAProxy: a streamed volume write answered early', () => {
  const VOLUME = '0b8f6c1e-6d0a-4c4e-9a55-3f1d2f1c9a01';
  const QUOTA = 8 * 1024 * 1024;
  let edge: RunningEdge;
  let node: FakeNode;
  let stand: VolumeEdge;
  let runDir: string;

  before(async () => {
    runDir = mkdtempSync(join(tmpdir(), 'cove-edge-hp-vol-'));
    // The stand-in control plane grants every token the volume and its quota.
    stand = await startVolumeEdge(
      (req, res) => {
        req.resume();
        req.on('end', () => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ volumeID: VOLUME, quotaBytes: QUOTA }));
        });
      },
      { COVE_EDGE_RUN_DIR: runDir, COVE_TRAFFIC_PROXY: 'haproxy' },
    );
    ({ edge, node } = stand);
    assert.equal(edge.trafficProxy, 'haproxy');
  });
  after(async () => {
    await stand.close();
    rmSync(runDir, { recursive: true, force: true });
  });

  it('reaches the client promptly, and the next request on the same connection is served', async () => {
    // A client that hands its whole upload to the socket at once and keeps the connection for its next request.
    // No length, so only the node can refuse it (past the quota, while the body is still arriving).
    const socket = connect(edge.trafficPort, '127.0.0.1');
    await once(socket, 'connect');
    const head = (method: string, path: string, extra: string[]) =>
      [`${method} /volumecontent/${VOLUME}/${path} HTTP/1.1`, `host: api.${DOMAIN}`, 'authorization: Bearer good', ...extra, '', ''].join('\r\n');
    const big = 5 * QUOTA;
    socket.write(head('PUT', 'file?path=/big.bin', ['transfer-encoding: chunked']));
    socket.write(`${big.toString(16)}\r\n`);
    socket.write(Buffer.alloc(big, 1));
    socket.write('\r\n0\r\n\r\n');
    socket.write(head('GET', 'path?path=/big.bin', []));
    let received = '';
    socket.setEncoding('latin1').on('data', (c: string) => (received += c));
    const answers = () => received.match(/HTTP\/1\.1 \d{3}/g) ?? [];
    try {
      await eventually(() => answers().length >= 2, 10_000, 'the 507 and the answer to the request sent after it on the same connection');
      assert.deepEqual(answers(), ['HTTP/1.1 507', 'HTTP/1.1 200']);
      assert.match(received, /"error_code":"volume_full"/);
    } finally {
      socket.destroy();
    }
  });
});

// The SDK's envd client asks for HTTP/2 (undici `allowH2`): over TLS HAProxy offers it, so a sandbox's sequential
// calls share one connection where HTTP/1.1 opened a second one while the first call's stream was closing.
describe('edge traffic port served by HAProxy over TLS: HTTP/2', () => {
  let pki: TestPki;
  let edge: RunningEdge;
  let nodeA: FakeNode;
  let nodeB: FakeNode;
  let runDir: string;
  let session: ClientHttp2Session;
  const via = (fn: () => Promise<unknown>) => viaBackend(runDir, fn);

  /** One HTTP/2 request on the shared session: status, headers and body text. */
  function h2(headers: Record<string, string>, body?: Buffer): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
    return new Promise((resolve, reject) => {
      const req = session.request({ ':method': body ? 'POST' : 'GET', ':path': '/', ...headers }, { endStream: !body });
      let text = '';
      let head: Record<string, unknown> = {};
      req.on('response', (h) => (head = h)).setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve({ status: Number(head[':status']), headers: head, text })).on('error', reject);
      if (body) req.end(body);
    });
  }

  before(async () => {
    pki = makeTestPki();
    runDir = mkdtempSync(join(tmpdir(), 'cove-edge-hp-h2-'));
    edge = await startEdge({
      COVE_EDGE_RUN_DIR: runDir,
      COVE_TRAFFIC_PROXY: 'haproxy',
      COVE_EDGE_TRAFFIC_TLS_PORT: '0',
      COVE_EDGE_TRAFFIC_TLS_CERT: pki.files.serverCert,
      COVE_EDGE_TRAFFIC_TLS_KEY: pki.files.serverKey,
    });
    assert.equal(edge.trafficProxy, 'haproxy');
    nodeA = await new FakeNode({ nodeId: 'node-a' }).start();
    nodeB = await new FakeNode({ nodeId: 'node-b' }).start();
    await nodeA.heartbeat(edge.apiUrl);
    await nodeB.heartbeat(edge.apiUrl);
    for (const [node, id] of [[nodeA, 'puba'], [nodeB, 'pubb']] as const) {
      await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: id } }), { headers: linkHeaders(node.opts.nodeId, { 'cove-sandbox-id': id }) });
    }
    session = http2Connect(`https://127.0.0.1:${edge.trafficTlsPort}`, { ca: pki.pem.ca, servername: 'localhost' });
    await once(session, 'connect');
  });
  after(async () => {
    session?.destroy();
    await edge.close();
    await nodeA.close();
    await nodeB.close();
    rmSync(runDir, { recursive: true, force: true });
    pki.remove();
  });

  it('negotiates h2 and routes a public sandbox itself, by Host and by headers, as over HTTP/1.1', async () => {
    assert.equal((session.socket as TLSSocket).alpnProtocol, 'h2');
    let seen: Record<string, string> = {};
    assert.equal(
      await via(async () => {
        const r = await h2({ ':path': '/headers', ':authority': `49983-puba.${DOMAIN}`, 'cove-node-token': 'spoofed' });
        assert.equal(r.status, 200, r.text);
        seen = JSON.parse(r.text);
      }),
      'nodes',
    );
    assert.equal(seen['cove-node-token'], nodeA.nodeToken);
    assert.equal(seen['e2b-sandbox-id'], 'puba');
    assert.equal(seen['e2b-sandbox-port'], '49983');
    assert.equal(seen['x-forwarded-proto'], 'https');
    assert.equal(
      await via(async () => assert.equal((await h2({ ':authority': 'localhost', 'e2b-sandbox-id': 'pubb', 'e2b-sandbox-port': '8080' })).text, 'hello from pubb:8080')),
      'nodes',
    );
  });

  it('keeps requests on one HTTP/2 connection apart when they go to different sandboxes and nodes', async () => {
    const ids = ['puba', 'pubb', 'puba', 'pubb', 'pubb', 'puba'];
    const answers = await Promise.all(ids.map((id, i) => h2({ ':authority': `${3000 + i}-${id}.${DOMAIN}` })));
    assert.deepEqual(answers.map((a) => a.text), ids.map((id, i) => `hello from ${id}:${3000 + i}`));
  });

  it('streams an upload whole to the sandbox', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024 + 17, 5);
    const r = await h2({ ':method': 'POST', ':path': '/upload', ':authority': `8080-puba.${DOMAIN}` }, body);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(JSON.parse(r.text), { bytes: body.length, sha256: createHash('sha256').update(body).digest('hex') });
  });

  it('keeps WebSockets on HTTP/1.1: RFC 8441 is not offered, and an extended CONNECT reaches no node', async () => {
    // HAProxy 2.6 leaves an h2 WebSocket tunnel's node connection open after the client resets the stream.
    assert.equal(session.remoteSettings.enableConnectProtocol, false);
    const before = await served(runDir);
    const outcome = await new Promise<string>((resolve) => {
      const req = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/ws', ':authority': `8080-puba.${DOMAIN}` });
      req.on('response', (h) => {
        resolve(`status ${String(h[':status'])}`);
        req.close();
      });
      req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.equal(outcome, 'status 400');
    assert.equal((await served(runDir)).nodes, before.nodes);
  });

  it('leaves unknown sandboxes and CONNECT to the fallback, which answers with the JSON errors', async () => {
    let r: Awaited<ReturnType<typeof h2>> | undefined;
    assert.equal(await via(async () => (r = await h2({ ':authority': `49983-nosuch.${DOMAIN}` }))), 'fallback');
    assert.equal(r!.status, 502);
    assert.deepEqual(JSON.parse(r!.text), sandboxNotFoundBody('nosuch'));
    // A CONNECT naming a routable sandbox must not become a tunnel to its node.
    const before = await served(runDir);
    const outcome = await new Promise<string>((resolve) => {
      const req = session.request({ ':method': 'CONNECT', ':authority': `8080-puba.${DOMAIN}:443` });
      req.on('response', (h) => {
        resolve(`status ${String(h[':status'])}`);
        req.close();
      });
      req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.notEqual(outcome, 'status 200');
    assert.equal((await served(runDir)).nodes, before.nodes, 'no CONNECT reached a node');
    // The refusal was the stream's alone: the connection serves on.
    assert.equal((await h2({ ':authority': `8080-puba.${DOMAIN}` })).text, 'hello from puba:8080');
  });
});

describe('edge traffic port served by HAProxy: one hop to a sandbox in its network namespace', () => {
  let edge: RunningEdge;
  let local: FakeNode;
  let remote: FakeNode;
  let runDir: string;
  let url: string;
  /** Stand-in sandboxes: servers on their own loopback addresses, answering with what they were sent. */
  const servers: Server[] = [];
  const seen: { who: string; path: string; headers: Record<string, unknown> }[] = [];
  const ports: Record<string, number> = {};
  const addresses: Record<string, string> = { dira: '127.0.0.5', dirb: '127.0.0.6', dirkill: '127.0.0.6', masked: '127.0.0.5', farc: '127.0.0.7' };
  const route = (id: string, p: number | string, extra: Record<string, string> = {}) => ({ 'e2b-sandbox-id': id, 'e2b-sandbox-port': String(p), ...extra });
  const via = (fn: () => Promise<unknown>) => viaBackend(runDir, fn);
  const directMap = async () => runtimeCommand(runFiles(runDir).socketPath, [`show map ${runFiles(runDir).directMapPath}`]);

  async function standIn(who: string, host: string, port = 0): Promise<number> {
    const server = createHttpServer((req, res) => {
      seen.push({ who, path: req.url ?? '', headers: req.headers });
      if (req.url === '/own-503') {
        res.writeHead(503, { 'cove-direct-error': '1', 'content-type': 'text/plain' }).end('the app is busy');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ who, path: req.url, headers: req.headers }));
    });
    server.listen(port, host);
    await once(server, 'listening');
    servers.push(server);
    return (server.address() as AddressInfo).port;
  }

  async function createOn(node: FakeNode, id: string, maskRequestHost = ''): Promise<void> {
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: id, maskRequestHost } }), {
      headers: linkHeaders(node.opts.nodeId, { 'cove-sandbox-id': id }),
    });
  }

  before(async () => {
    runDir = mkdtempSync(join(tmpdir(), 'cove-edge-hp1-'));
    edge = await startEdge({ COVE_EDGE_RUN_DIR: runDir, COVE_TRAFFIC_PROXY: 'haproxy' });
    assert.equal(edge.trafficProxy, 'haproxy');
    assert.notEqual(networkNamespaceId(), '', 'this process can read its network namespace');
    ports.dira = await standIn('dira', addresses.dira!);
    ports.dirb = await standIn('dirb', addresses.dirb!);
    ports.farc = await standIn('farc', addresses.farc!);
    await standIn('envd-dira', addresses.dira!, ENVD_PORT);
    local = await new FakeNode({ nodeId: 'node-local', networkNamespace: networkNamespaceId(), addressOf: (id) => addresses[id] ?? '' }).start();
    remote = await new FakeNode({ nodeId: 'node-remote', networkNamespace: 'another-host:1', addressOf: (id) => addresses[id] ?? '' }).start();
    await local.heartbeat(edge.apiUrl);
    await remote.heartbeat(edge.apiUrl);
    url = edge.trafficUrl;
    await createOn(local, 'dira');
    await createOn(local, 'dirb');
    await createOn(local, 'masked', 'masked.example:${PORT}');
    await createOn(remote, 'farc');
  });
  after(async () => {
    await edge.close();
    await local.close();
    await remote.close();
    for (const s of servers) s.close();
    rmSync(runDir, { recursive: true, force: true });
  });

  it('sends a public sandbox\'s requests straight to its address, by headers and by Host, never with a node token', async () => {
    const proxied = local.proxyHeaders.length;
    let body: { who: string; headers: Record<string, string> } | undefined;
    assert.equal(
      await via(async () => {
        const res = await send(`${url}/hello`, { headers: route('dira', ports.dira!, { 'cove-node-token': local.nodeToken, 'proxy-authorization': 'Basic eA==' }) });
        assert.equal(res.status, 200, res.text);
        body = res.json();
      }),
      'direct',
    );
    assert.equal(body?.who, 'dira');
    assert.equal(body?.headers['e2b-sandbox-id'], 'dira');
    assert.equal(body?.headers['e2b-sandbox-port'], String(ports.dira));
    assert.equal(body?.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(body?.headers['x-forwarded-proto'], 'http');
    assert.equal(body?.headers['cove-node-token'], undefined, 'the node token (the client\'s copy too) never reaches a sandbox');
    assert.equal(body?.headers['proxy-authorization'], undefined);
    assert.equal(await via(async () => assert.equal((await send(`${url}/x`, { headers: { host: `${ports.dirb}-dirb.cove.test` } })).json().who, 'dirb')), 'direct');
    assert.equal(local.proxyHeaders.length, proxied, 'the node proxy was not in the path');
  });

  it('keeps envd\'s internal routes, in any spelling, on the node proxy', async () => {
    for (const path of ['/health', '/files?path=%2Ftmp%2Fx', '/process.Process/Start', '/filesystem.Filesystem/Stat']) {
      assert.equal(await via(() => send(`${url}${path}`, { headers: route('dira', ENVD_PORT) })), 'direct', path);
    }
    const before = seen.filter((s) => s.who === 'envd-dira').length;
    for (const path of ['/init', '/INIT', '/%69nit', '//init', '/./init', '/files/../init', '/health/', '/process.Process/../../init', '/cove/logs', '/metrics']) {
      assert.equal(await via(() => send(`${url}${path}`, { headers: route('dira', ENVD_PORT) })), 'nodes', path);
    }
    assert.equal(seen.filter((s) => s.who === 'envd-dira').length, before, 'none of them reached the sandbox in one hop');
  });

  it('answers a closed port as the node proxy does, and leaves a sandbox\'s own errors alone', async () => {
    const probe = createHttpServer();
    probe.listen(0, addresses.dirb);
    await once(probe, 'listening');
    const closed = (probe.address() as AddressInfo).port;
    probe.close();
    await once(probe, 'close');
    const res = await send(`${url}/`, { headers: route('dirb', closed) });
    assert.equal(res.status, 502);
    assert.deepEqual(res.json(), portClosedBody('dirb', closed));
    assert.equal(res.headers['cove-direct-error'], undefined);
    const own = await send(`${url}/own-503`, { headers: route('dirb', ports.dirb!) });
    assert.equal(own.status, 503, 'the sandbox\'s own 503 is not made a proxy error');
    assert.equal(own.text, 'the app is busy');
    assert.equal(own.headers['cove-direct-error'], undefined);
  });

  it('routes through the node proxy what only it can do: a masked Host, a node in another namespace', async () => {
    assert.equal(await via(() => send(`${url}/`, { headers: route('masked', ports.dira!) })), 'nodes');
    assert.equal(await via(() => send(`${url}/`, { headers: route('farc', ports.farc!) })), 'nodes');
    assert.doesNotMatch(await directMap(), /masked|farc/);
  });

  it('takes the one-hop route away before a Delete reaches the node, and when the node leaves the namespace', async () => {
    await createOn(local, 'dirkill');
    assert.match(await directMap(), /dirkill/);
    let during = '';
    local.beforeDelete = async () => {
      during = await directMap();
    };
    try {
      await edge.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'dirkill' }), { headers: linkHeaders('node-local', { 'cove-sandbox-id': 'dirkill' }) });
    } finally {
      local.beforeDelete = undefined;
    }
    assert.doesNotMatch(during, /dirkill/);
    assert.match(during, /dira 127\.0\.0\.5/);
    // The node reports another namespace (it moved, or the edge did): every sandbox of it goes back to two hops.
    local.opts.networkNamespace = 'moved:2';
    await local.heartbeat(edge.apiUrl);
    assert.equal((await directMap()).trim(), '');
    assert.equal(await via(() => send(`${url}/`, { headers: route('dira', ports.dira!) })), 'nodes');
    local.opts.networkNamespace = networkNamespaceId();
    await local.heartbeat(edge.apiUrl);
    assert.equal(await via(() => send(`${url}/`, { headers: route('dira', ports.dira!) })), 'direct');
  });
});
