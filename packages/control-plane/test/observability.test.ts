// Observability routes of the control plane over real HTTP, on SQLite and a throwaway PostgreSQL
// (docs/observability.md): sandbox logs and metrics, build logs and status answer 307 to the cluster's public port
// with a grant verified here against the served JWKS (claims, audience, lifetime); another team's or unknown
// sandboxes and builds are 404, ended ones still redirect; malformed queries are 400 and limits are clamped; team
// metrics come from the control plane's own records; the anonymized cluster report is parsed strictly (an extra
// property or a string in a number field is refused) and health raises alerts; /metrics needs the admin token.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import { ADMIN_TOKEN, PUBLIC_URL, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';

const report = (over: Record<string, unknown> = {}) => ({
  schema: 'cove.cluster-metrics.v1',
  sampledAt: new Date().toISOString(),
  nodes: [
    { index: 0, healthy: true, cpuCount: 4, cpuUsedPct: 20, memoryBytes: 8e9, memoryUsedBytes: 2e9, diskBytes: 1e11, diskUsedBytes: 1e10 },
    { index: 1, healthy: true, cpuCount: 4, cpuUsedPct: 10, memoryBytes: 8e9, memoryUsedBytes: 1e9, diskBytes: 1e11, diskUsedBytes: 1e10 },
  ],
  sandboxes: { running: 3, paused: 1, starting: 0 },
  builds: { running: 0, succeeded: 2, failed: 1 },
  errors: { sandboxCreateFailed: 0, resumeFailed: 0, telemetryDropped: 0 },
  ...over,
});

for (const engine of ['sqlite', 'postgres'] as const)
describe(`observability routes (${engine} store)`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  let dir: string;
  let pgServer: ThrowawayPostgres | undefined;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;
  let teamId: string;
  let clusterId: string;
  let otherKey: string;
  let live: string;
  let ended: string;
  let build: { templateID: string; buildID: string };
  const env = () => ({ COVE_DB_URL: pgServer ? pgServer.url : join(dir, 'cp.db'), COVE_ALERT_CAPACITY_PCT: '90' });
  const api = (path: string, k = key) => call(cp.url, 'GET', path, { key: k });

  /** Follows nothing: asserts a 307 to the same path on the public port and returns the verified grant. */
  async function redirected(path: string, k = key, to = path): Promise<{ url: URL; claims: JWTPayload & Record<string, unknown> }> {
    const r = await api(path, k);
    assert.equal(r.status, 307, `${path} → ${r.status} ${JSON.stringify(r.body)}`);
    const url = new URL(String(r.headers.location));
    assert.equal(url.origin, new URL(PUBLIC_URL).origin);
    assert.equal(url.pathname, new URL(to, 'http://x').pathname);
    const grant = url.searchParams.get('cove_grant');
    assert.ok(grant, 'the redirect carries a grant');
    const jwks = await call(cp.url, 'GET', '/.well-known/cove-grant-jwks.json');
    assert.equal(jwks.status, 200);
    assert.ok(jwks.body.keys.every((k: Record<string, unknown>) => k.d === undefined), 'no private key material in the JWKS');
    const { payload } = await jwtVerify(grant, createLocalJWKSet(jwks.body), { issuer: 'cove-control-plane', audience: clusterId, algorithms: ['EdDSA'] });
    assert.equal(payload.sub, teamId);
    assert.ok(payload.exp! - payload.iat! <= 60, 'a grant lives at most 60 s');
    assert.equal(decodeProtectedHeader(grant).alg, 'EdDSA');
    return { url, claims: payload as JWTPayload & Record<string, unknown> };
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-obs-'));
    if (engine === 'postgres') pgServer = await startPostgres();
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane(env(), dir);
    ({ key, teamId, clusterId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
    ({ key: otherKey } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'other', maxConcurrentSandboxes: 50 }));
    const mk = async () => {
      const c = await call(cp.url, 'POST', '/sandboxes', { key, body: { templateID: 'base', timeout: 300 } });
      assert.equal(c.status, 201, JSON.stringify(c.body));
      return c.body.sandboxID as string;
    };
    live = await mk();
    ended = await mk();
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${ended}`, { key })).status, 204);
    const r = await call(cp.url, 'POST', '/v3/templates', { key, body: { name: 'obs', cpuCount: 1, memoryMB: 256 } });
    assert.equal(r.status, 202);
    build = { templateID: r.body.templateID, buildID: r.body.buildID };
    assert.equal((await call(cp.url, 'POST', `/v2/templates/${build.templateID}/builds/${build.buildID}`, { key, body: { fromTemplate: 'base', steps: [] } })).status, 202);
  });

  after(async () => {
    await cp?.close();
    await cluster?.close();
    pgServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('sandbox logs (v1, v2) and metrics redirect with a grant for exactly that sandbox; the query is kept', async () => {
    for (const id of [live, ended]) {
      const v1 = await redirected(`/sandboxes/${id}/logs?start=1700000000000&limit=50`);
      assert.deepEqual([v1.claims.scope, v1.claims.sandbox_ids], ['sandbox.logs', [id]]);
      assert.equal(v1.url.searchParams.get('start'), '1700000000000');
      assert.equal(v1.url.searchParams.get('limit'), '50');
      const v2 = await redirected(`/v2/sandboxes/${id}/logs?cursor=5&direction=backward&level=warn&search=needle`);
      assert.equal(v2.claims.scope, 'sandbox.logs');
      assert.deepEqual(['cursor', 'direction', 'level', 'search'].map((k) => v2.url.searchParams.get(k)), ['5', 'backward', 'warn', 'needle']);
      const m = await redirected(`/sandboxes/${id}/metrics?start=10&end=20`);
      assert.deepEqual([m.claims.scope, m.claims.sandbox_ids], ['sandbox.metrics', [id]]);
    }
    const many = await redirected(`/sandboxes/metrics?sandbox_ids=${live},${ended}`);
    assert.deepEqual([many.claims.scope, many.claims.sandbox_ids], ['sandbox.metrics', [live, ended]]);
  });

  test('limits above the cap are clamped; a caller-made cove_grant is replaced', async () => {
    const v2 = await redirected(`/v2/sandboxes/${live}/logs?limit=50000&cove_grant=forged`);
    assert.equal(v2.url.searchParams.get('limit'), '1000');
    assert.equal(v2.url.searchParams.getAll('cove_grant').length, 1);
    assert.notEqual(v2.url.searchParams.get('cove_grant'), 'forged');
    const b = await redirected(`/templates/${build.templateID}/builds/${build.buildID}/logs?limit=500`);
    assert.equal(b.url.searchParams.get('limit'), '100');
  });

  test('build logs and status redirect with a grant for that template and build', async () => {
    const s = await redirected(`/templates/${build.templateID}/builds/${build.buildID}/status?logsOffset=7`);
    assert.deepEqual([s.claims.scope, s.claims.template_id, s.claims.build_id, s.claims.sandbox_ids], ['build.status', build.templateID, build.buildID, undefined]);
    assert.equal(s.url.searchParams.get('logsOffset'), '7');
    assert.deepEqual(s.claims.build_state, { status: 'building' });
    assert.equal(s.claims.node_id, 'node-a', 'the builder node, asked first by the edge');
    const byName = await redirected(`/templates/obs/builds/${build.buildID}/logs`, key, `/templates/${build.templateID}/builds/${build.buildID}/logs`);
    assert.deepEqual([byName.claims.scope, byName.claims.template_id], ['build.logs', build.templateID]);
  });

  test("another team's or unknown sandboxes and builds are 404 (no redirect, no grant)", async () => {
    const paths = [
      `/sandboxes/${live}/logs`,
      `/v2/sandboxes/${live}/logs`,
      `/sandboxes/${live}/metrics`,
      `/sandboxes/${ended}/metrics`,
      `/sandboxes/metrics?sandbox_ids=${live}`,
      `/templates/${build.templateID}/builds/${build.buildID}/logs`,
      `/templates/${build.templateID}/builds/${build.buildID}/status`,
    ];
    for (const p of paths) {
      const r = await api(p, otherKey);
      assert.equal(r.status, 404, `${p} → ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.headers.location, undefined);
    }
    for (const p of ['/sandboxes/nosuchsandbox/logs', '/v2/sandboxes/nosuchsandbox/logs', '/sandboxes/nosuchsandbox/metrics', `/sandboxes/metrics?sandbox_ids=${live},nosuchsandbox`, `/templates/${build.templateID}/builds/00000000-0000-0000-0000-000000000000/status`]) {
      assert.equal((await api(p)).status, 404, p);
    }
    assert.equal((await api(`/sandboxes/${live}/logs`, 'e2b_' + '0'.repeat(40))).status, 401);
  });

  test('malformed cursors, limits, ranges and ids are 400 with a clear message', async () => {
    const cases: Array<[string, RegExp]> = [
      [`/sandboxes/${live}/logs?limit=-1`, /limit must be a non-negative integer/],
      [`/sandboxes/${live}/logs?start=yesterday`, /start must be a non-negative integer/],
      [`/sandboxes/${live}/logs?start=20&end=10`, /start must not be after end/],
      [`/v2/sandboxes/${live}/logs?cursor=1e3`, /cursor must be a non-negative integer/],
      [`/v2/sandboxes/${live}/logs?limit=abc`, /limit must be a non-negative integer/],
      [`/v2/sandboxes/${live}/logs?direction=sideways`, /direction/],
      [`/v2/sandboxes/${live}/logs?level=loud`, /level/],
      [`/v2/sandboxes/${live}/logs?search=${'x'.repeat(257)}`, /search/],
      [`/v2/sandboxes/${live}/logs?cursor=99999999999999999`, /cursor is too large/],
      [`/sandboxes/${live}/metrics?start=30&end=20`, /start must not be after end/],
      [`/sandboxes/${live}/metrics?end=-5`, /end must be a non-negative integer/],
      ['/sandboxes/metrics', /sandbox_ids/],
      ['/sandboxes/metrics?sandbox_ids=', /at least one sandbox/],
      ['/sandboxes/metrics?sandbox_ids=BAD!', /lowercase letters and digits/],
      [`/sandboxes/metrics?sandbox_ids=${Array.from({ length: 101 }, (_, i) => `s${i}`).join(',')}`, /more than 100/],
      [`/templates/${build.templateID}/builds/${build.buildID}/status?logsOffset=-1`, /logsOffset/],
      [`/templates/${build.templateID}/builds/${build.buildID}/logs?source=elsewhere`, /source/],
      [`/teams/${teamId}/metrics?start=abc`, /start must be a non-negative integer/],
      [`/teams/${teamId}/metrics?start=0&end=${40 * 86400}`, /longer than 31 days/],
      [`/teams/${teamId}/metrics/max`, /metric/],
    ];
    for (const [p, re] of cases) {
      const r = await api(p);
      assert.equal(r.status, 400, `${p} → ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 400);
      assert.match(r.body.message, re, p);
    }
  });

  test('team metrics: concurrent sandboxes and start rate from the control plane records; another team id is 404', async () => {
    const now = Math.floor(Date.now() / 1000);
    const m = await api(`/teams/${teamId}/metrics?start=${now - 60}&end=${now + 5}`);
    assert.equal(m.status, 200, JSON.stringify(m.body));
    const last = m.body[m.body.length - 1];
    assert.deepEqual(Object.keys(last).sort(), ['concurrentSandboxes', 'sandboxStartRate', 'timestamp', 'timestampUnix']);
    assert.equal(last.concurrentSandboxes, 1, 'the live sandbox, not the ended one');
    const max = await api(`/teams/${teamId}/metrics/max?start=${now - 60}&end=${now + 5}&metric=sandbox_start_rate`);
    assert.equal(max.status, 200);
    assert.ok(max.body.value > 0, JSON.stringify(max.body));
    const conc = await api(`/teams/${teamId}/metrics/max?start=${now - 60}&end=${now + 5}&metric=concurrent_sandboxes`);
    assert.ok(conc.body.value >= 1);
    const other = (await call(cp.url, 'GET', '/admin/teams', { admin: ADMIN_TOKEN })).body.find((t: { id: string }) => t.id !== teamId).id;
    assert.equal((await api(`/teams/${other}/metrics`)).status, 404);
    assert.equal((await api(`/teams/${other}/metrics/max?metric=concurrent_sandboxes`)).status, 404);
  });

  test('cluster metrics intake is strict: extra property or wrong type → 400; a valid report is kept', async () => {
    const post = (body: unknown, token = cluster.token) =>
      call(cp.url, 'POST', '/cluster/v1/metrics', { body, headers: token ? { authorization: `Bearer ${token}` } : {} });
    assert.equal((await post(report(), '')).status, 401);
    assert.equal((await post(report(), 'not-the-cluster-token-at-all')).status, 403);
    const refused: Array<[unknown, RegExp]> = [
      [report({ sandboxId: 'abc' }), /Unrecognized key/],
      [report({ nodes: [{ ...report().nodes[0], nodeId: 'node-a' }] }), /Unrecognized key/],
      [report({ sandboxes: { running: 1, paused: 0, starting: 0, templateId: 'x' } }), /Unrecognized key/],
      [report({ builds: { running: '1', succeeded: 0, failed: 0 } }), /builds\.running/],
      [report({ nodes: [{ ...report().nodes[0], memoryBytes: 'lots' }] }), /memoryBytes/],
      [report({ schema: 'cove.cluster-metrics.v2' }), /schema/],
      [report({ errors: { sandboxCreateFailed: 0, resumeFailed: 0, telemetryDropped: 0, lastError: 'log line' } }), /Unrecognized key/],
    ];
    const before = await cp.cp.clusterMetrics.count(clusterId);
    for (const [body, re] of refused) {
      const r = await post(body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.message, re);
    }
    assert.equal(await cp.cp.clusterMetrics.count(clusterId), before, 'nothing refused was stored');
    assert.equal((await post(report())).status, 204);
    assert.equal(await cp.cp.clusterMetrics.count(clusterId), before + 1);
  });

  test('health: node missing and capacity above the threshold raise alerts; no report → unknown', async () => {
    const health = () => call(cp.url, 'GET', `/admin/clusters/${clusterId}/health`, { admin: ADMIN_TOKEN });
    const post = (body: unknown) => call(cp.url, 'POST', '/cluster/v1/metrics', { body, headers: { authorization: `Bearer ${cluster.token}` } });
    assert.equal((await post(report())).status, 204);
    const ok = await health();
    assert.equal(ok.status, 200);
    assert.deepEqual([ok.body.status, ok.body.alerts], ['healthy', []]);
    assert.equal(ok.body.report.sandboxes.running, 3);
    const full = { ...report().nodes[0], memoryUsedBytes: 7.6e9 };
    assert.equal((await post(report({ nodes: [full] }))).status, 204);
    const bad = await health();
    assert.equal(bad.body.status, 'degraded');
    const kinds = bad.body.alerts.map((a: { kind: string; node?: number; resource?: string }) => [a.kind, a.node, a.resource ?? null]);
    assert.deepEqual(kinds, [['node_missing', 1, null], ['capacity_high', 0, 'memory']]);
    assert.equal((await call(cp.url, 'GET', `/admin/clusters/${clusterId}/health`)).status, 401);
    const c2 = await call(cp.url, 'POST', '/admin/clusters', { admin: ADMIN_TOKEN, body: { name: 'silent', endpoint: 'http://127.0.0.1:9', token: 'silent-cluster-token-0123' } });
    const none = await call(cp.url, 'GET', `/admin/clusters/${c2.body.id}/health`, { admin: ADMIN_TOKEN });
    assert.deepEqual([none.body.status, none.body.alerts[0].kind], ['unknown', 'reports_missing']);
  });

  test('the series is bounded: the oldest reports go first', async () => {
    const store = cp.cp.clusterMetrics;
    const { ClusterMetricsStore } = await import('../src/observability/cluster-health.js');
    const small = new ClusterMetricsStore(cp.cp.db.kysely, { maxAgeMs: 3_600_000, maxReports: 3 });
    for (let i = 0; i < 6; i++) await small.add(clusterId, report() as never, Date.now() + i);
    assert.equal(await store.count(clusterId), 3);
    // Reports received in the same millisecond as the oldest kept one: exactly the bound is kept, not fewer.
    const same = (await store.latest(clusterId, 10)).at(-1)!.receivedAt;
    await small.add(clusterId, report() as never, same);
    assert.equal(await store.count(clusterId), 3);
    const old = Date.now() - 2 * 3_600_000;
    await small.add(clusterId, report() as never, old);
    await small.add(clusterId, report() as never);
    assert.equal(await store.count(clusterId), 3);
    assert.ok((await store.latest(clusterId, 10)).every((r) => r.receivedAt > old));
  });

  test('/metrics (Prometheus) needs the admin token and counts requests by route pattern', async () => {
    assert.equal((await call(cp.url, 'GET', '/metrics')).status, 401);
    assert.equal((await call(cp.url, 'GET', '/metrics', { headers: { authorization: 'Bearer wrong' } })).status, 401);
    const r = await call(cp.url, 'GET', '/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(r.status, 200);
    assert.match(r.body, /cove_cp_http_requests_total\{method="GET",route="\/sandboxes\/:sandboxID\/logs",status="307"\}/);
    assert.match(r.body, /cove_cp_live_sandboxes \d+/);
    assert.ok(!r.body.includes(live), 'no sandbox id in the metrics');
  });

  test('the signing key survives a restart (same kid), and a cluster without a public URL is a clear error', async () => {
    const kid = (await call(cp.url, 'GET', '/.well-known/cove-grant-jwks.json')).body.keys[0].kid;
    await cp.close();
    cp = await startControlPlane(env(), dir);
    assert.equal((await call(cp.url, 'GET', '/.well-known/cove-grant-jwks.json')).body.keys[0].kid, kid);
    await redirected(`/sandboxes/${live}/logs`);
    assert.equal((await call(cp.url, 'PATCH', `/admin/clusters/${clusterId}`, { admin: ADMIN_TOKEN, body: { publicUrl: null } })).status, 200);
    const r = await api(`/sandboxes/${live}/logs`);
    assert.equal(r.status, 502);
    assert.match(r.body.message, /no public URL/);
    assert.equal((await call(cp.url, 'PATCH', `/admin/clusters/${clusterId}`, { admin: ADMIN_TOKEN, body: { publicUrl: PUBLIC_URL } })).status, 200);
  });
});
