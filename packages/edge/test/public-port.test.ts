// The edge's public port with a real edge, a stand-in collector (a real HTTP server answering the collector query
// API from fixtures) and a stand-in control plane serving a JWKS of a key made here (createRemoteJWKSet fetches
// it over HTTP) and the cluster identity: grants are required, verified (signature, issuer, audience, expiry) and
// must cover exactly the resource; answers are E2B's public shapes; the collector is asked for the grant's team
// only, with its token and never the caller's headers; a broken collector is a clean 502; /metrics needs the
// cluster token.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { BuildRequestSchema } from '@cove/contracts/orchestrator';
import { SignJWT, UnsecuredJWT, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { request } from 'undici';
import { CLUSTER_TOKEN, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { FakeNode } from './fixtures/fake-node.js';

const COLLECTOR_TOKEN = 'collector-token-0123456789abcdef';
const CLUSTER_ID = 'cluster-under-test';
const TEAM = 'team-a';

interface CollectorCall {
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
}

/** Answers the collector query API from fixtures; `mode` breaks it on purpose. */
class StandInCollector {
  readonly calls: CollectorCall[] = [];
  mode: 'ok' | 'down' | 'garbage' | 'huge' | 'shape' | 'slow' = 'ok';
  url = '';
  private server!: Server;

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://c');
      this.calls.push({ path: u.pathname, query: Object.fromEntries(u.searchParams), headers: req.headers });
      if (req.headers.authorization !== `Bearer ${COLLECTOR_TOKEN}`) return void res.writeHead(401).end('{}');
      const json = (body: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      switch (this.mode) {
        case 'down':
          return void res.writeHead(503).end('{"message":"secret internal detail"}');
        case 'garbage':
          return void res.writeHead(200).end('not json at all');
        case 'huge':
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write('{"logs":["');
          for (let i = 0; i < 10; i++) res.write('x'.repeat(1024 * 1024));
          return void res.end('"]}');
        case 'shape':
          return json({ logs: 'nope', logEntries: 42 });
        case 'slow':
          return; // never answers
      }
      const metric = (ts: number) => ({ timestamp: new Date(ts * 1000).toISOString(), timestamp_unix: ts, cpu_used_pct: 12.5, cpu_count: 2, mem_total: 512e6, mem_used: 100e6, mem_cache: 10e6, disk_total: 2e9, disk_used: 1e9 });
      if (/^\/v1\/sandboxes\/[^/]+\/logs$/.test(u.pathname)) {
        return json({
          logs: [{ timestamp: '2026-12-03T10:00:00.000Z', line: '{"level":"info","logger":"process","msg":"process started"}' }],
          logEntries: [{ timestamp: '2026-12-03T10:00:00.000Z', level: 'info', message: 'process started', fields: { cmd: '/bin/bash' } }],
        });
      }
      if (u.pathname === '/v1/sandboxes/metrics') return json({ sandboxes: { sbxa: metric(100), sbxb: metric(101), stranger: metric(102) } });
      if (/^\/v1\/sandboxes\/[^/]+\/metrics$/.test(u.pathname)) return json([metric(100), metric(102)]);
      if (/^\/v1\/templates\/builds\/[^/]+\/logs$/.test(u.pathname)) {
        return json({ logEntries: [{ timestamp: '2026-12-03T10:00:00.000Z', level: 'info', message: 'RUN echo hi', fields: { 'cove.build.step': '1' } }] });
      }
      res.writeHead(404).end('{}');
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

/** The control plane's side: JWKS and the cluster identity (cluster token required). */
async function standInControlPlane(jwks: unknown): Promise<{ url: string; close(): Promise<void>; identityCalls: number }> {
  const state = { identityCalls: 0 };
  const server = createServer((req, res) => {
    if (req.url === '/.well-known/cove-grant-jwks.json') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
    if (req.url === '/cluster/v1/identity') {
      state.identityCalls++;
      if (req.headers.authorization !== `Bearer ${CLUSTER_TOKEN}`) return void res.writeHead(401).end('{}');
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ clusterId: CLUSTER_ID }));
    }
    res.writeHead(404).end('{}');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get identityCalls() {
      return state.identityCalls;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('edge public port: grants, collector answers, build status', () => {
  let edge: RunningEdge;
  let collector: StandInCollector;
  let cp: Awaited<ReturnType<typeof standInControlPlane>>;
  let node: FakeNode;
  let key: CryptoKey;
  let strangerKey: CryptoKey;

  const grant = async (claims: Record<string, unknown>, o: { key?: CryptoKey; aud?: string; iss?: string; exp?: number; sub?: string } = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'EdDSA', kid: 'k1' })
      .setIssuer(o.iss ?? 'cove-control-plane')
      .setAudience(o.aud ?? CLUSTER_ID)
      .setSubject(o.sub ?? TEAM)
      .setIssuedAt(now)
      .setExpirationTime(o.exp ?? now + 60)
      .sign(o.key ?? key);
  };
  const get = async (path: string, g?: string, headers: Record<string, string> = {}) => {
    const u = new URL(path, edge.publicUrl);
    if (g !== undefined) u.searchParams.set('cove_grant', g);
    const res = await request(u, { headers });
    const text = await res.body.text();
    let body: any = text;
    try {
      body = JSON.parse(text);
    } catch {
      // keep text
    }
    return { status: res.statusCode, body };
  };
  const logsGrant = (ids: string[]) => grant({ scope: 'sandbox.logs', sandbox_ids: ids });
  const metricsGrant = (ids: string[]) => grant({ scope: 'sandbox.metrics', sandbox_ids: ids });

  before(async () => {
    const pair = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    key = pair.privateKey;
    strangerKey = (await generateKeyPair('EdDSA', { crv: 'Ed25519' })).privateKey;
    cp = await standInControlPlane({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'EdDSA', use: 'sig' }] });
    collector = await new StandInCollector().start();
    edge = await startEdge({
      COVE_EDGE_PUBLIC_PORT: '0',
      COVE_CONTROL_PLANE_URL: cp.url,
      COVE_COLLECTOR_URL: collector.url,
      COVE_COLLECTOR_TOKEN: COLLECTOR_TOKEN,
      COVE_COLLECTOR_TIMEOUT_MS: '500',
    });
    node = await new FakeNode({ nodeId: 'node-a' }).start();
    await node.heartbeat(edge.apiUrl);
  });

  after(async () => {
    await edge?.close();
    await node?.close();
    await collector?.close();
    await cp?.close();
  });

  it('no grant, a forged, expired, foreign-audience or foreign-issuer grant → 401 JSON; the collector is never asked', async () => {
    const before = collector.calls.length;
    const now = Math.floor(Date.now() / 1000);
    const cases: Array<[string | undefined, RegExp]> = [
      [undefined, /missing cove_grant/],
      ['not-a-jwt', /invalid cove_grant/],
      [await grant({ scope: 'sandbox.logs', sandbox_ids: ['sbxa'] }, { key: strangerKey }), /invalid cove_grant/],
      [await grant({ scope: 'sandbox.logs', sandbox_ids: ['sbxa'] }, { exp: now - 30 }), /expired/],
      [await grant({ scope: 'sandbox.logs', sandbox_ids: ['sbxa'] }, { aud: 'another-cluster' }), /invalid cove_grant/],
      [await grant({ scope: 'sandbox.logs', sandbox_ids: ['sbxa'] }, { iss: 'someone-else' }), /invalid cove_grant/],
      [await grant({ scope: 'everything' }), /invalid cove_grant/],
      // An unsigned token (alg none) with the right claims is no grant.
      [new UnsecuredJWT({ scope: 'sandbox.logs', sandbox_ids: ['sbxa'] }).setIssuer('cove-control-plane').setAudience(CLUSTER_ID).setSubject(TEAM).setIssuedAt().setExpirationTime('1m').encode(), /invalid cove_grant/],
    ];
    for (const [g, re] of cases) {
      const r = await get('/v2/sandboxes/sbxa/logs', g);
      assert.equal(r.status, 401, `${g} → ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 401);
      assert.match(r.body.message, re);
    }
    assert.equal(collector.calls.length, before);
    assert.equal(cp.identityCalls, 1, 'the cluster id is asked once and kept');
  });

  it('a valid grant for another scope, sandbox or build → 403', async () => {
    const before = collector.calls.length;
    const cases: Array<[string, string]> = [
      ['/v2/sandboxes/sbxa/logs', await metricsGrant(['sbxa'])],
      ['/sandboxes/sbxa/metrics', await logsGrant(['sbxa'])],
      ['/v2/sandboxes/sbxb/logs', await logsGrant(['sbxa'])],
      ['/sandboxes/sbxb/metrics', await metricsGrant(['sbxa'])],
      ['/sandboxes/metrics?sandbox_ids=sbxa,sbxb', await metricsGrant(['sbxa'])],
      ['/templates/tpl1/builds/b2/logs', await grant({ scope: 'build.logs', template_id: 'tpl1', build_id: 'b1' })],
      ['/templates/tpl2/builds/b1/status', await grant({ scope: 'build.status', template_id: 'tpl1', build_id: 'b1' })],
      ['/templates/tpl1/builds/b1/status', await grant({ scope: 'build.logs', template_id: 'tpl1', build_id: 'b1' })],
    ];
    for (const [path, g] of cases) {
      const r = await get(path, g);
      assert.equal(r.status, 403, `${path} → ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 403);
    }
    assert.equal(collector.calls.length, before);
  });

  it('sandbox logs v1 and v2 in E2B shapes, asked for the grant team only, with the collector token and none of the caller headers', async () => {
    const apiKey = 'e2b_' + 'a'.repeat(40);
    const v1 = await get('/sandboxes/sbxa/logs?start=1700000000000&limit=99999', await logsGrant(['sbxa']), { 'x-api-key': apiKey });
    assert.equal(v1.status, 200, JSON.stringify(v1.body));
    assert.deepEqual(Object.keys(v1.body).sort(), ['logEntries', 'logs']);
    assert.equal(v1.body.logs[0].line, '{"level":"info","logger":"process","msg":"process started"}');
    let c = collector.calls.at(-1)!;
    assert.equal(c.path, '/v1/sandboxes/sbxa/logs');
    assert.deepEqual([c.query.teamID, c.query.start, c.query.limit], [TEAM, '1700000000000', '1000']);
    assert.equal(c.headers.authorization, `Bearer ${COLLECTOR_TOKEN}`);
    assert.equal(c.headers['x-api-key'], undefined);
    assert.ok(!JSON.stringify(c).includes(apiKey) && !JSON.stringify(c.query).includes('cove_grant'));

    const v2 = await get('/v2/sandboxes/sbxa/logs?cursor=1700000000000&direction=backward&level=warn&search=started', await logsGrant(['sbxa']));
    assert.equal(v2.status, 200);
    assert.deepEqual(v2.body, { logs: [{ timestamp: '2026-12-03T10:00:00.000Z', level: 'info', message: 'process started', fields: { cmd: '/bin/bash' } }] });
    c = collector.calls.at(-1)!;
    assert.deepEqual([c.query.end, c.query.start, c.query.direction, c.query.level, c.query.search], ['1700000000000', undefined, 'backward', 'warn', 'started']);
  });

  it('malformed queries are 400 on the public port too', async () => {
    for (const path of ['/v2/sandboxes/sbxa/logs?limit=-3', '/v2/sandboxes/sbxa/logs?cursor=x', '/v2/sandboxes/sbxa/logs?direction=up', '/v2/sandboxes/sbxa/logs?limit=1&limit=2', `/v2/sandboxes/sbxa/logs?search=${'s'.repeat(300)}`, '/sandboxes/sbxa/logs?start=9&end=1']) {
      const r = await get(path, await logsGrant(['sbxa']));
      assert.equal(r.status, 400, `${path} → ${JSON.stringify(r.body)}`);
      assert.match(r.body.message, /^invalid query: /);
    }
  });

  it('sandbox metrics in camelCase, one or many (only the ids asked for)', async () => {
    const one = await get('/sandboxes/sbxa/metrics?start=90&end=200', await metricsGrant(['sbxa']));
    assert.equal(one.status, 200);
    assert.deepEqual(one.body[0], { timestamp: new Date(100_000).toISOString(), timestampUnix: 100, cpuUsedPct: 12.5, cpuCount: 2, memUsed: 100e6, memTotal: 512e6, memCache: 10e6, diskUsed: 1e9, diskTotal: 2e9 });
    assert.deepEqual([collector.calls.at(-1)!.query.start, collector.calls.at(-1)!.query.end, collector.calls.at(-1)!.query.teamID], ['90', '200', TEAM]);
    const many = await get('/sandboxes/metrics?sandbox_ids=sbxa,sbxb', await metricsGrant(['sbxa', 'sbxb']));
    assert.equal(many.status, 200);
    assert.deepEqual(Object.keys(many.body.sandboxes).sort(), ['sbxa', 'sbxb'], 'nothing the caller did not ask for');
    assert.equal(many.body.sandboxes.sbxb.timestampUnix, 101);
  });

  it('build logs with their step', async () => {
    const r = await get('/templates/tpl1/builds/b1/logs?limit=500', await grant({ scope: 'build.logs', template_id: 'tpl1', build_id: 'b1' }));
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { logs: [{ timestamp: '2026-12-03T10:00:00.000Z', level: 'info', message: 'RUN echo hi', step: '1' }] });
    assert.deepEqual([collector.calls.at(-1)!.query.templateID, collector.calls.at(-1)!.query.teamID, collector.calls.at(-1)!.query.limit], ['tpl1', TEAM, '100']);
  });

  it('build status from the builder node with logsOffset paging; an unknown build gets the recorded state', async () => {
    node.builds.set('b1', create(BuildRequestSchema, { templateId: 'tpl1', buildId: 'b1', steps: [{ type: 'RUN', args: ['a'] }, { type: 'RUN', args: ['b'] }, { type: 'COPY', args: ['x', '/x'] }] }));
    const g = await grant({ scope: 'build.status', template_id: 'tpl1', build_id: 'b1', build_state: { status: 'building' } });
    const first = await get('/templates/tpl1/builds/b1/status?logsOffset=0', g);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.status, 'ready');
    assert.deepEqual(first.body.logEntries.map((e: { message: string; step: string }) => [e.message, e.step]), [['step 1: RUN', '1'], ['step 2: RUN', '2'], ['step 3: COPY', '3']]);
    assert.equal(first.body.logs.length, 3);
    const rest = await get('/templates/tpl1/builds/b1/status?logsOffset=2', g);
    assert.deepEqual(rest.body.logEntries.map((e: { message: string }) => e.message), ['step 3: COPY']);
    const past = await get('/templates/tpl1/builds/b1/status?logsOffset=3', g);
    assert.deepEqual(past.body.logEntries, []);

    // The builder node named by the grant answers first (another node only knows what reached storage so far).
    const other = await new FakeNode({ nodeId: 'node-b' }).start();
    try {
      await other.heartbeat(edge.apiUrl);
      other.builds.set('b1', create(BuildRequestSchema, { templateId: 'tpl1', buildId: 'b1', steps: [{ type: 'RUN', args: ['only'] }] }));
      for (const [nodeId, n] of [['node-b', 1], ['node-a', 3]] as const) {
        const r = await get('/templates/tpl1/builds/b1/status', await grant({ scope: 'build.status', template_id: 'tpl1', build_id: 'b1', node_id: nodeId }));
        assert.equal(r.body.logEntries.length, n, `builder ${nodeId}`);
      }
    } finally {
      await other.close();
    }

    const gone = await get('/templates/tpl1/builds/b9/status', await grant({ scope: 'build.status', template_id: 'tpl1', build_id: 'b9', build_state: { status: 'error', reason: { message: 'step 2 failed (exit code 1)', step: '2' } } }));
    assert.equal(gone.status, 200);
    assert.deepEqual(gone.body, { templateID: 'tpl1', buildID: 'b9', status: 'error', logEntries: [], logs: [], reason: { message: 'step 2 failed (exit code 1)', step: '2' } });
  });

  it('a collector that is down, slow, too big, not JSON or out of shape is a clean 502 with no detail of its reply', async () => {
    try {
      for (const mode of ['down', 'garbage', 'huge', 'shape', 'slow'] as const) {
        collector.mode = mode;
        const r = await get('/v2/sandboxes/sbxa/logs', await logsGrant(['sbxa']));
        assert.equal(r.status, 502, `${mode} → ${r.status}`);
        assert.equal(r.body.code, 502);
        assert.ok(!JSON.stringify(r.body).includes('secret internal detail'));
        assert.ok(!JSON.stringify(r.body).includes('xxxx'));
      }
    } finally {
      collector.mode = 'ok';
    }
  });

  it('only the routes of the grant exist on the public port; /metrics on the API port needs the cluster token', async () => {
    assert.equal((await get('/v1/nodes', await logsGrant(['sbxa']))).status, 404);
    assert.equal((await get('/sandboxes', await logsGrant(['sbxa']))).status, 404);
    const none = await request(`${edge.apiUrl}/metrics`);
    assert.equal(none.statusCode, 401);
    await none.body.dump();
    const wrong = await request(`${edge.apiUrl}/metrics`, { headers: { authorization: 'Bearer wrong-token-0123456789' } });
    assert.equal(wrong.statusCode, 403);
    await wrong.body.dump();
    const ok = await request(`${edge.apiUrl}/metrics`, { headers: { authorization: `Bearer ${CLUSTER_TOKEN}` } });
    assert.equal(ok.statusCode, 200);
    const text = await ok.body.text();
    assert.match(text, /cove_edge_public_requests_total\{route="logs.v2",status="200"[^}]*\} \d+/);
    assert.match(text, /cove_edge_grant_refusals_total\{status="401"[^}]*\} \d+/);
    assert.match(text, /cove_edge_collector_errors_total(\{[^}]*\})? \d+/);
    assert.match(text, /cove_edge_nodes\{status="healthy"[^}]*\} [1-9]/);
    assert.ok(!text.includes('sbxa'), 'no sandbox ids in metrics');
  });
});
