// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
// Outbound-only control link (docs/operating.md, "Outbound-only clusters"): the real edge (its own process) dials
// the real control plane through a TLS terminator the test runs (the edge verifies it against a per-run CA), and
// the control plane — which was never told any address of the edge — discovers the node and creates, extends and
// kills a sandbox over that connection. The terminator is also how the test cuts the link: a create while the
// link is down fails with `cluster_unavailable`, the edge re-dials, and the sandbox made before the drop is still
// there to kill. Then the doors: wrong / missing token, a cluster the control plane dials itself, bad edge ids,
// another protocol, oversized handshakes, garbage instead of HTTP/2 and an oversized answer from a hostile "edge",
// and an edge facing a control plane certificate it does not trust (it sends nothing and says why).

import { deriveNodeToken } from '@cove/auth-tokens';
import { EDGE_ID_HEADER, LINK_PATH, LINK_PROTOCOL } from '@cove/contracts/link';
import { eventually } from '@cove/test-support/eventually';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { createServer as createH2Server } from 'node:http2';
import { connect as netConnect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { NodeRegistry } from '@cove/contracts/edge';
import { InfoResponseSchema } from '@cove/contracts/orchestrator';
import { toJson } from '@bufbuild/protobuf';
import { createServer as createHttpServer } from 'node:http';
import { isNoLinkOpen, OutboundLinks } from '../src/cluster/outbound-link.js';
import { createLogger } from '../src/logger.js';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { nodeInfo, startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { EDGE_MAIN, spawnEdge, type EdgeProcess } from './fixtures/edge-process.js';

// The link's keep-alive, scaled down from production's 15 s ping and 45 s silence so the idle test takes seconds.
const PING_MS = 500;
const IDLE_MS = 2_000;
const CLUSTER_TOKEN = 'outbound-edge-cluster-token-0123456789';
const DIRECT_TOKEN = 'direct-cluster-token-0123456789abcdef';
const NODE_CREDENTIAL_KEY = 'edge-node-credential-key-0123456789abcdef';
const NODE_TOKEN = deriveNodeToken(NODE_CREDENTIAL_KEY, 'outbound-node-1');

/** A real edge process dialling out to the control plane; its log lines are kept for assertions. */
function startEdge(env: Record<string, string>): Promise<EdgeProcess> {
  return spawnEdge({ COVE_CLUSTER_TOKEN: CLUSTER_TOKEN, COVE_NODE_CREDENTIAL_KEY: NODE_CREDENTIAL_KEY, COVE_CONTROL_LINK_OUTBOUND: 'on', ...env });
}

/** A TLS terminator in front of the control plane, as an operator's load balancer would be; `cut()` drops every connection. */
interface Terminator {
  port: number;
  /** Plaintext bytes that reached the terminator (after TLS), per connection. */
  received: Buffer[];
  cut(): void;
  setOpen(open: boolean): void;
  close(): Promise<void>;
}

async function startTerminator(pki: TestPki, upstreamPort: number): Promise<Terminator> {
  const sockets = new Set<Socket>();
  const received: Buffer[] = [];
  let open = true;
  const server: Server = createTlsServer({ cert: pki.pem.serverCert, key: pki.pem.serverKey }, (tls: TLSSocket) => {
    if (!open) {
      tls.destroy();
      return;
    }
    const up = netConnect(upstreamPort, '127.0.0.1');
    sockets.add(tls);
    sockets.add(up);
    const idx = received.push(Buffer.alloc(0)) - 1;
    tls.on('data', (d: Buffer) => {
      if (received[idx]!.length < 4096) received[idx] = Buffer.concat([received[idx]!, d]).subarray(0, 4096);
    });
    tls.pipe(up).pipe(tls);
    const end = (): void => {
      tls.destroy();
      up.destroy();
      sockets.delete(tls);
      sockets.delete(up);
    };
    tls.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    received,
    cut() {
      for (const s of sockets) s.destroy();
    },
    setOpen(v) {
      open = v;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** One raw HTTP/1.1 exchange on the control plane's port: the status and body of its answer, or 101 and the socket. */
async function handshake(port: number, headers: Record<string, string>, path = LINK_PATH): Promise<{ status: number; body: string; socket: Socket }> {
  const socket = netConnect(port, '127.0.0.1');
  await once(socket, 'connect');
  const lines = [`GET ${path} HTTP/1.1`, 'host: cp', 'connection: Upgrade', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  let data = Buffer.alloc(0);
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer): void => {
      data = Buffer.concat([data, d]);
      const text = data.toString('latin1');
      const headEnd = text.indexOf('\r\n\r\n');
      if (headEnd < 0) return;
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
      if (status === 101) {
        socket.off('data', onData);
        socket.pause(); // the caller's HTTP/2 endpoint reads from here on
        const rest = data.subarray(headEnd + 4);
        if (rest.length > 0) socket.unshift(rest);
        resolve({ status, body: '', socket });
      }
    };
    socket.on('data', onData);
    socket.on('error', reject);
    socket.on('close', () => {
      const text = data.toString('utf8');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
      resolve({ status, body: text.slice(text.indexOf('\r\n\r\n') + 4), socket });
    });
  });
}

describe('outbound-only control link through the real edge', { skip: existsSync(EDGE_MAIN) ? false : 'edge not built' }, () => {
  let pki: TestPki;
  let cp: RunningControlPlane;
  let cpPort: number;
  let term: Terminator;
  let node: FakeCluster;
  let edge: EdgeProcess;
  let key: string;
  let clusterId: string;
  let sessions: Http2SessionManager;
  let beats: NodeJS.Timeout | undefined;

  const outbound = () => cp.cp.links.outbound!;

  before(async () => {
    pki = makeTestPki();
    cp = await startControlPlane({ COVE_CONTROL_LINK_TIMEOUT_MS: '5000', COVE_CONTROL_LINK_PING_MS: String(PING_MS), COVE_LOG_LEVEL: process.env.DEBUG_LOG ?? 'silent' });
    cpPort = Number(new URL(cp.url).port);
    ({ key, clusterId } = await setupTeam(cp.url, 'outbound://edge', CLUSTER_TOKEN));
    // A second cluster the control plane dials itself: its token must not open a link.
    const direct = await call(cp.url, 'POST', '/admin/clusters', {
      admin: 'admin-token-for-tests-0123456789',
      body: { name: 'direct', endpoint: 'http://127.0.0.1:9', token: DIRECT_TOKEN, sandboxDomain: 'direct.test' },
    });
    assert.equal(direct.status, 201, JSON.stringify(direct.body));
    term = await startTerminator(pki, cpPort);

    node = await startFakeCluster(NODE_TOKEN);
    const fakeNode = node.addNode('outbound-node-1');
    // The edge trusts the per-run CA through NODE_EXTRA_CA_CERTS, as it would trust a private CA in production.
    edge = await startEdge({ COVE_CONTROL_PLANE_URL: `https://localhost:${term.port}`, NODE_EXTRA_CA_CERTS: pki.files.ca, COVE_EDGE_ID: 'edge-a', COVE_CONTROL_LINK_IDLE_MS: String(IDLE_MS) });
    const edgeUrl = `http://127.0.0.1:${edge.apiPort}`;
    sessions = new Http2SessionManager(edgeUrl);
    const registry = createClient(NodeRegistry, createGrpcTransport({ baseUrl: edgeUrl, sessionManager: sessions }));
    const beat = () =>
      registry.heartbeat(
        { info: nodeInfo(fakeNode), rpcUrl: node.endpoint, proxyUrl: 'http://127.0.0.1:1', sandboxIds: [...fakeNode.sandboxes.keys()] },
        { headers: { authorization: `Bearer ${NODE_TOKEN}` } },
      );
    await beat();
    // The node keeps beating as an orchestrator does (every 2 s), so the edge keeps it healthy through the test.
    beats = setInterval(() => void beat().catch(() => undefined), 1_000);
    await eventually(() => outbound().count(clusterId) === 1, 15_000, 'the edge to open its link');
  });

  after(async () => {
    if (process.env.DEBUG_LOG) process.stderr.write(edge.lines.join('\n') + '\n');
    clearInterval(beats);
    sessions?.abort();
    await edge?.stop();
    await cp?.close();
    await term?.close();
    await node?.close();
    pki?.remove();
  });

  test('create, timeout and kill travel over the link the edge dialled', async () => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 120 } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = r.body.sandboxID as string;
    const n = node.nodes.get('outbound-node-1')!;
    assert.ok(n.sandboxes.has(id));
    assert.equal(node.calls.find((c) => c.method === 'Create' && c.sandboxId === id)?.authorization, `Bearer ${NODE_TOKEN}`);
    assert.equal((await call(cp.url, 'POST', `/sandboxes/${id}/timeout`, { key, body: { timeout: 60 } })).status, 204);
    assert.ok(node.calls.some((c) => c.method === 'Update' && c.sandboxId === id));
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key })).status, 204);
    assert.ok(!n.sandboxes.has(id));
    // The handshake went through TLS: what reached the terminator in the clear is the upgrade request.
    assert.ok(term.received.some((b) => b.toString('latin1').startsWith(`GET ${LINK_PATH} HTTP/1.1`)));
    assert.ok(edge.lines.some((l) => l.includes('control link open (outbound)')));
  });

  test('an idle link stays open: pings keep it alive on both sides', async () => {
    // Time passing is what is tested (this edge cuts a link silent for IDLE_MS; this control plane pings every
    // PING_MS, the production 45 s / 15 s scaled down), so this waits three silences long with no call on the link,
    // then checks the same link is still the one in use.
    const closedBefore = edge.lines.filter((l) => l.includes('control link closed')).length;
    await new Promise((r) => setTimeout(r, 3 * IDLE_MS));
    assert.equal(edge.lines.filter((l) => l.includes('control link closed')).length, closedBefore, 'the link was not cut while idle');
    assert.equal(outbound().count(clusterId), 1);
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60 } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${r.body.sandboxID}`, { key })).status, 204);
  });

  test('a dropped link: calls fail with cluster_unavailable, the edge re-dials, what ran keeps running', async (t) => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 300 } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const kept = r.body.sandboxID as string;

    term.setOpen(false);
    t.after(() => term.setOpen(true)); // a failure here leaves the next tests a working path
    term.cut();
    await eventually(() => outbound().count(clusterId) === 0, 10_000, 'the control plane to see the link drop');
    const during = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60 } });
    // cluster_unavailable: 502 with E2B's create-failed code, and a message that names the cause.
    assert.equal(during.status, 502, JSON.stringify(during.body));
    assert.equal(during.body.message, 'cluster "cluster-outbound://edge" has no control link open (outbound-only: its edge dials the control plane)');
    // The sandbox made before the drop was not touched by it.
    assert.ok(node.nodes.get('outbound-node-1')!.sandboxes.has(kept));
    assert.equal((await call(cp.url, 'GET', `/sandboxes/${kept}`, { key })).status, 200);

    term.setOpen(true);
    await eventually(() => outbound().count(clusterId) === 1, 40_000, 'the edge to re-dial');
    assert.ok(edge.lines.some((l) => l.includes('control link closed; re-dialling')));
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${kept}`, { key })).status, 204);
    const again = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60 } });
    assert.equal(again.status, 201, JSON.stringify(again.body));
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${again.body.sandboxID}`, { key })).status, 204);
  });

  test('registration: outbound://<label> names an outbound-only cluster; other schemes are refused', async () => {
    for (const endpoint of ['outbound://', 'outbound://a/b', 'ftp://edge.example', 'outbound://edge?x=1']) {
      const r = await call(cp.url, 'POST', '/admin/clusters', {
        admin: 'admin-token-for-tests-0123456789',
        body: { name: `bad-${endpoint}`, endpoint, token: 'another-cluster-token-0123456789', sandboxDomain: 'bad.test' },
      });
      assert.equal(r.status, 400, `${endpoint}: ${JSON.stringify(r.body)}`);
    }
    const listed = await call(cp.url, 'GET', '/admin/clusters', { admin: 'admin-token-for-tests-0123456789' });
    const mine = (listed.body as Array<{ id: string; endpoint: string; controlLinks?: number }>).find((c) => c.id === clusterId);
    assert.equal(mine?.endpoint, 'outbound://edge');
    assert.equal(mine?.controlLinks, 1, 'the admin API shows the links the cluster holds');
  });

  test('handshakes that must not open a link are refused with a structured error', async () => {
    const good = { upgrade: LINK_PROTOCOL, [EDGE_ID_HEADER]: 'hostile-1' };
    const cases: Array<[Record<string, string>, number, string, string?]> = [
      [good, 401, 'cluster_token_missing'],
      [{ ...good, authorization: 'Bearer not-the-token-0123456789' }, 403, 'cluster_token_invalid'],
      [{ ...good, authorization: `Bearer ${DIRECT_TOKEN}` }, 409, 'cluster_not_outbound'],
      [{ ...good, authorization: `Bearer ${CLUSTER_TOKEN}`, [EDGE_ID_HEADER]: '../../etc' }, 400, 'edge_id_invalid'],
      [{ upgrade: 'websocket', authorization: `Bearer ${CLUSTER_TOKEN}`, [EDGE_ID_HEADER]: 'x' }, 400, 'link_protocol_unsupported'],
      [{ ...good, authorization: `Bearer ${CLUSTER_TOKEN}` }, 404, 'not_found', '/cluster/v1/other'],
    ];
    for (const [headers, status, code, path] of cases) {
      const r = await handshake(cpPort, headers, path);
      assert.equal(r.status, status, `${code}: ${r.body}`);
      assert.equal(JSON.parse(r.body).error_code, code);
    }
    // A handshake too large for the HTTP parser is cut by Node before any of our code runs.
    const big = await handshake(cpPort, { ...good, authorization: `Bearer ${CLUSTER_TOKEN}`, 'x-pad': 'a'.repeat(64 * 1024) });
    assert.equal(big.status, 431);
    assert.equal(outbound().count(clusterId), 1, 'the real edge kept its link throughout');
    assert.equal((await call(cp.url, 'GET', '/health')).status, 200);
  });

  test('a hostile edge: garbage instead of HTTP/2, an oversized answer — calls fail, nothing crashes', async () => {
    // Take the real edge out so the hostile links are the cluster's only ones.
    await edge.stop();
    await eventually(() => outbound().count(clusterId) === 0, 10_000, 'the real edge to leave');

    const garbage = await handshake(cpPort, { upgrade: LINK_PROTOCOL, [EDGE_ID_HEADER]: 'hostile-garbage', authorization: `Bearer ${CLUSTER_TOKEN}` });
    assert.equal(garbage.status, 101);
    garbage.socket.resume();
    garbage.socket.write(Buffer.alloc(64 * 1024, 0xff));
    await once(garbage.socket, 'close');
    await eventually(() => outbound().count(clusterId) === 0, 10_000, 'the garbage link to be dropped');
    const r1 = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60 } });
    assert.equal(r1.status, 502, JSON.stringify(r1.body));

    // A well-formed HTTP/2 "edge" that answers node discovery with far more than the control plane reads.
    const h = await handshake(cpPort, { upgrade: LINK_PROTOCOL, [EDGE_ID_HEADER]: 'hostile-big', authorization: `Bearer ${CLUSTER_TOKEN}` });
    assert.equal(h.status, 101);
    const fake = createH2Server();
    let streamed = 0;
    fake.on('stream', (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      const push = (): void => {
        while (streamed < 64 * 1024 * 1024 && !stream.destroyed) {
          streamed += chunk.length;
          if (!stream.write(chunk)) return void stream.once('drain', push);
        }
        if (!stream.destroyed) stream.end();
      };
      stream.on('error', () => undefined);
      push();
    });
    fake.on('sessionError', () => undefined);
    fake.emit('connection', h.socket);
    await eventually(() => outbound().count(clusterId) === 1, 10_000, 'the hostile link to open');
    const r2 = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60 } });
    assert.equal(r2.status, 502, JSON.stringify(r2.body));
    assert.match(r2.body.message, /cluster-outbound:\/\/edge/);
    assert.ok(streamed < 64 * 1024 * 1024, `the control plane stopped reading (read ${streamed} bytes)`);
    h.socket.destroy();
    fake.close();
    assert.equal((await call(cp.url, 'GET', '/health')).status, 200);
  });

  test('a hostile edge mid-call: an oversized gRPC answer is refused, a link dropped under a create fails it at once', async () => {
    const fakeNode = node.nodes.get('outbound-node-1')!;
    let mode: 'oversize' | 'hang' = 'oversize';
    let createSeen: (() => void) | undefined;
    let sent = 0;
    const fake = createH2Server();
    fake.on('stream', (stream, headers) => {
      stream.on('error', () => undefined);
      if (headers[':path'] === '/v1/nodes') {
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.end(JSON.stringify([{ nodeId: fakeNode.nodeId, status: 'healthy', info: toJson(InfoResponseSchema, nodeInfo(fakeNode)) }]));
        return;
      }
      if (String(headers[':path']).endsWith('/Create')) {
        createSeen?.();
        if (mode === 'hang') return; // never answers: only the link's drop can end this call
        // A gRPC message whose length prefix claims 2 GiB, then bytes for as long as the control plane reads.
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
        const head = Buffer.alloc(5);
        head.writeUInt32BE(0x7fffffff, 1);
        stream.write(head);
        const chunk = Buffer.alloc(256 * 1024);
        const push = (): void => {
          while (!stream.destroyed && sent < 256 * 1024 * 1024) {
            sent += chunk.length;
            if (!stream.write(chunk)) return void stream.once('drain', push);
          }
        };
        push();
      }
    });
    fake.on('sessionError', () => undefined);
    const dial = async (edgeId: string) => {
      const h = await handshake(cpPort, { upgrade: LINK_PROTOCOL, [EDGE_ID_HEADER]: edgeId, authorization: `Bearer ${CLUSTER_TOKEN}` });
      assert.equal(h.status, 101);
      fake.emit('connection', h.socket);
      await eventually(() => outbound().count(clusterId) === 1, 10_000, 'the hostile link to open');
      return h.socket;
    };
    try {
      const first = await dial('hostile-oversize');
      const r1 = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60 } });
      assert.ok(r1.status >= 500, JSON.stringify(r1.body));
      if (process.env.DEBUG_LOG) process.stderr.write(`oversize create answered ${r1.status} ${JSON.stringify(r1.body)} after ${sent} bytes\n`);
      assert.ok(sent > 0, 'the Create reached the hostile edge');
      assert.ok(sent < 256 * 1024 * 1024, `the control plane stopped reading the oversized message (${sent} bytes sent)`);
      first.destroy();
      await eventually(() => outbound().count(clusterId) === 0, 10_000, 'the first hostile link to close');

      mode = 'hang';
      const second = await dial('hostile-hang');
      const seen = new Promise<void>((r) => (createSeen = r));
      const started = Date.now();
      const pending = call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60 } });
      await seen;
      second.destroy(); // the link drops with the Create in flight
      const r2 = await pending;
      assert.ok(r2.status >= 500, JSON.stringify(r2.body));
      assert.ok(Date.now() - started < 4_500, `the pending create failed at the drop, not at the 5 s call timeout (${Date.now() - started} ms)`);
      assert.equal((await call(cp.url, 'GET', '/health')).status, 200);
    } finally {
      fake.close();
    }
  });

  test('an edge with the wrong token, or facing a certificate it does not trust, is refused and says why', async () => {
    const wrong = await startEdge({ COVE_CONTROL_PLANE_URL: `https://localhost:${term.port}`, NODE_EXTRA_CA_CERTS: pki.files.ca, COVE_CLUSTER_TOKEN: 'wrong-cluster-token-0123456789abc', COVE_EDGE_ID: 'edge-wrong' });
    try {
      const line = await eventually(() => wrong.lines.find((l) => l.includes('control link refused by the control plane')), 15_000, 'the refusal log');
      const rec = JSON.parse(line) as { status: number; errorCode: string };
      assert.equal(rec.status, 403);
      assert.equal(rec.errorCode, 'cluster_token_invalid');
      assert.equal(wrong.proc.exitCode, null, 'a refused edge keeps running (and re-dials with backoff)');
    } finally {
      await wrong.stop();
    }

    const before = term.received.length;
    const untrusting = await startEdge({ COVE_CONTROL_PLANE_URL: `https://localhost:${term.port}`, COVE_EDGE_ID: 'edge-untrusting' });
    try {
      const line = await eventually(() => untrusting.lines.find((l) => l.includes('control link dial failed')), 15_000, 'the TLS failure log');
      assert.match(line, /certificate|CERT/i);
      // Not one byte in the clear reached the terminator from this edge: the token never left it.
      assert.ok(term.received.slice(before).every((b) => b.length === 0));
    } finally {
      await untrusting.stop();
    }
  });
});

describe('outbound links: a silent edge', () => {
  test('a link whose edge stops answering pings is cut, and calls fail UNAVAILABLE instead of hanging', async () => {
    const cluster = { id: 'c-silent', name: 'silent', endpoint: 'outbound://silent', token: CLUSTER_TOKEN, sandboxDomain: null, publicUrl: null, createdAt: new Date(), updatedAt: new Date() };
    const links = new OutboundLinks({ clusters: async () => [cluster], log: createLogger('silent'), pingIntervalMs: 300, pingTimeoutMs: 300, waitForLinkMs: 0 });
    const server = createHttpServer((_req, res) => res.end());
    server.on('upgrade', links.handleUpgrade);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const port = (server.address() as { port: number }).port;
      // The "edge" completes the handshake and then never sends a byte: no SETTINGS, no PING ack.
      const h = await handshake(port, { upgrade: LINK_PROTOCOL, [EDGE_ID_HEADER]: 'silent-edge', authorization: `Bearer ${CLUSTER_TOKEN}` });
      assert.equal(h.status, 101);
      assert.equal(links.count('c-silent'), 1);
      h.socket.resume(); // read (and drop) what the control plane sends, so only the silence is tested
      await eventually(() => links.count('c-silent') === 0, 10_000, 'the silent link to be cut');
      await assert.rejects(links.sessionManager(cluster).request('GET', '/v1/nodes', {}, {}), (err: unknown) => isNoLinkOpen(err));
      h.socket.destroy();
    } finally {
      links.closeAll();
      server.close();
    }
  });
});
