// Sandbox lifecycle end to end through real HTTP into the control plane and real gRPC (HTTP/2) out of it, to
// the wire-level cluster fixture: create, list, detail, timeouts, connect, kill, placement fallback, eviction,
// restart. When the real edge and orchestrator land, the integration suite repeats these against them.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Code } from '@connectrpc/connect';
import { NodeStatus } from '@cove/contracts/orchestrator';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';
import { sandbox } from './fixtures/sandbox-record.js';

/** The metadata query exactly as SDK 2.51 builds it (e2b-sdk.md §2.1). */
function sdkMetadataQuery(m: Record<string, string>): string {
  const inner = new URLSearchParams(Object.entries(m).map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)])).toString();
  return `metadata=${encodeURIComponent(inner)}`;
}

for (const engine of ['sqlite', 'postgres'] as const)
describe(`sandbox lifecycle through the control link (${engine} store)`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  let dir: string;
  let pgServer: ThrowawayPostgres | undefined;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;
  let teamId: string;
  let otherKey: string;
  const env = () => ({ COVE_CP_REQUEST_LOG: join(dir, 'requests.jsonl'), COVE_DB_URL: pgServer ? pgServer.url : join(dir, 'cp.db') });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-flow-'));
    if (engine === 'postgres') pgServer = await startPostgres();
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane(env(), dir);
    ({ key, teamId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
    ({ key: otherKey } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'other' }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    pgServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const create = (body: Record<string, unknown> = {}, k = key, path = '/v2/sandboxes') =>
    call(cp.url, 'POST', path, { key: k, body: { templateID: 'base', ...body } });

  test('create answers an E2B Sandbox and drives Create on a node with the right headers', async () => {
    const r = await create({ timeout: 120, metadata: { purpose: 'flow' }, envVars: { A: 'b' } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const s = r.body;
    assert.match(s.sandboxID, /^i[a-z0-9]{20}$/);
    assert.equal(s.templateID, 'base');
    assert.equal(s.alias, 'base');
    assert.equal(s.envdVersion, '0.6.4');
    assert.match(s.envdAccessToken, /^[0-9a-f]{64}$/);
    assert.equal(s.trafficAccessToken, null);
    assert.equal(s.domain, 'cove.test');
    assert.equal(typeof s.clientID, 'string');
    const c = cluster.calls.find((x) => x.method === 'Create' && x.sandboxId === s.sandboxID);
    assert.ok(c, 'Create reached the node');
    assert.equal(c.authorization, `Bearer ${cluster.token}`);
    assert.equal(c.nodeId, 'node-a');
    assert.equal(c.trafficToken, null);
    assert.equal(c.envdAccessToken, s.envdAccessToken);
    assert.ok(cluster.nodes.get('node-a')!.sandboxes.has(s.sandboxID));
    assert.ok(cluster.calls.some((x) => x.method === 'GET /v1/nodes' && x.authorization === `Bearer ${cluster.token}`));

    const d = await call(cp.url, 'GET', `/sandboxes/${s.sandboxID}`, { key });
    assert.equal(d.status, 200);
    assert.equal(d.body.state, 'running');
    assert.equal(d.body.cpuCount, 2);
    assert.equal(d.body.memoryMB, 512);
    assert.deepEqual(d.body.metadata, { purpose: 'flow' });
    assert.equal(Date.parse(d.body.endAt) - Date.parse(d.body.startedAt), 120_000);
    assert.equal(d.body.envdAccessToken, s.envdAccessToken);
    assert.deepEqual(d.body.lifecycle, { autoResume: false, onTimeout: 'kill' });
  });

  test('v1 create works too; an omitted timeout means 15 s', async () => {
    const r = await create({}, key, '/sandboxes');
    assert.equal(r.status, 201);
    const d = await call(cp.url, 'GET', `/sandboxes/${r.body.sandboxID}`, { key });
    assert.equal(Date.parse(d.body.endAt) - Date.parse(d.body.startedAt), 15_000);
  });

  test('a private sandbox gets a traffic token, passed to the node', async () => {
    const r = await create({ network: { allowPublicTraffic: false } });
    assert.equal(r.status, 201);
    assert.match(r.body.trafficAccessToken, /^[0-9a-f]{64}$/);
    assert.notEqual(r.body.trafficAccessToken, r.body.envdAccessToken);
    const c = cluster.calls.find((x) => x.method === 'Create' && x.sandboxId === r.body.sandboxID);
    assert.equal(c?.trafficToken, r.body.trafficAccessToken);
  });

  test('another team cannot see or touch a sandbox (404)', async () => {
    const r = await create();
    const id = r.body.sandboxID;
    for (const [m, p, b] of [
      ['GET', `/sandboxes/${id}`, undefined],
      ['DELETE', `/sandboxes/${id}`, undefined],
      ['POST', `/sandboxes/${id}/timeout`, { timeout: 10 }],
      ['POST', `/sandboxes/${id}/refreshes`, { duration: 10 }],
      ['POST', `/v2/sandboxes/${id}/connect`, { timeout: 10 }],
    ] as const) {
      const x = await call(cp.url, m, p, { key: otherKey, body: b });
      assert.equal(x.status, 404, `${m} ${p}`);
      assert.equal(x.body.code, 404);
    }
    const list = await call(cp.url, 'GET', '/v2/sandboxes', { key: otherKey });
    assert.ok(!list.body.some((s: { sandboxID: string }) => s.sandboxID === id));
    assert.ok(cluster.nodes.get('node-a')!.sandboxes.has(id));
  });

  test('list: metadata filter with the SDK double encoding, state, template, order, pagination with X-Next-Token', async () => {
    const tag = `t${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await create({ metadata: { 'user id': 'a&b=c', tag, n: String(i) } });
      ids.push(r.body.sandboxID);
    }
    const q = sdkMetadataQuery({ 'user id': 'a&b=c', tag });
    assert.ok(sdkMetadataQuery({ 'user id': 'a&b=c', k: 'v' }).endsWith('user%252520id%3Da%252526b%25253Dc%26k%3Dv'));
    const all = await call(cp.url, 'GET', `/v2/sandboxes?${q}&order=asc`, { key });
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.map((s: { sandboxID: string }) => s.sandboxID), ids);
    assert.equal(all.headers['x-next-token'], undefined);
    assert.deepEqual(all.body[0].metadata, { 'user id': 'a&b=c', tag, n: '0' });

    const seen: string[] = [];
    let next: string | undefined;
    do {
      const page = await call(cp.url, 'GET', `/v2/sandboxes?${q}&limit=2${next ? `&nextToken=${encodeURIComponent(next)}` : ''}`, { key });
      assert.equal(page.status, 200);
      assert.ok(page.body.length <= 2);
      seen.push(...page.body.map((s: { sandboxID: string }) => s.sandboxID));
      next = page.headers['x-next-token'] as string | undefined;
    } while (next);
    assert.deepEqual(seen, [...ids].reverse());

    const one = await call(cp.url, 'GET', `/v2/sandboxes?${sdkMetadataQuery({ tag, n: '3' })}&state=running,paused&template=base`, { key });
    assert.deepEqual(one.body.map((s: { sandboxID: string }) => s.sandboxID), [ids[3]]);
    const paused = await call(cp.url, 'GET', `/v2/sandboxes?${q}&state=paused`, { key });
    assert.deepEqual(paused.body, []);
    const otherTemplate = await call(cp.url, 'GET', `/v2/sandboxes?${q}&template=other`, { key });
    assert.deepEqual(otherTemplate.body, []);
    const v1 = await call(cp.url, 'GET', `/sandboxes?${q}`, { key });
    assert.equal(v1.body.length, 5);
  });

  test('timeout may shorten and is pushed to the node; refreshes and connect only extend', async () => {
    const r = await create({ timeout: 600 });
    const id = r.body.sandboxID;
    const endOf = async () => Date.parse((await call(cp.url, 'GET', `/sandboxes/${id}`, { key })).body.endAt);

    const before = Date.now();
    assert.equal((await call(cp.url, 'POST', `/sandboxes/${id}/timeout`, { key, body: { timeout: 30 } })).status, 204);
    const shortened = await endOf();
    assert.ok(shortened >= before + 30_000 && shortened <= Date.now() + 30_000);
    const upd = cluster.calls.filter((c) => c.method === 'Update' && c.sandboxId === id);
    assert.equal(upd.length, 1);
    assert.equal(upd[0]!.endTime?.getTime(), shortened);
    assert.equal(upd[0]!.nodeId, 'node-a');

    assert.equal((await call(cp.url, 'POST', `/sandboxes/${id}/refreshes`, { key, body: { duration: 5 } })).status, 204);
    assert.equal(await endOf(), shortened, 'refresh never shortens');
    assert.equal((await call(cp.url, 'POST', `/sandboxes/${id}/refreshes`, { key, body: { duration: 120 } })).status, 204);
    const refreshed = await endOf();
    assert.ok(refreshed > shortened);

    const c1 = await call(cp.url, 'POST', `/v2/sandboxes/${id}/connect`, { key, body: { timeout: 10 } });
    assert.equal(c1.status, 200);
    assert.equal(c1.body.sandboxID, id);
    assert.equal(c1.body.envdAccessToken, r.body.envdAccessToken);
    assert.equal(c1.body.domain, 'cove.test');
    assert.equal(await endOf(), refreshed, 'connect never shortens');
    const c2 = await call(cp.url, 'POST', `/sandboxes/${id}/connect`, { key, body: { timeout: 900 } });
    assert.equal(c2.status, 200);
    assert.ok((await endOf()) > refreshed);
    const pushed = cluster.calls.filter((c) => c.method === 'Update' && c.sandboxId === id);
    assert.equal(pushed.length, 3, 'timeout, one extending refresh, one extending connect');

    const tooLong = await call(cp.url, 'POST', `/sandboxes/${id}/timeout`, { key, body: { timeout: 7200 } });
    assert.equal(tooLong.status, 400);
    assert.equal(tooLong.body.message, 'Timeout cannot be greater than 1 hours');
  });

  test('kill deletes on the node; a second kill is 404; a sandbox the node lost is marked gone', async () => {
    const r = await create();
    const id = r.body.sandboxID;
    const k = await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key });
    assert.equal(k.status, 204);
    assert.ok(!cluster.nodes.get('node-a')!.sandboxes.has(id));
    const d = cluster.calls.find((c) => c.method === 'Delete' && c.sandboxId === id);
    assert.equal(d?.nodeId, 'node-a');
    const again = await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key });
    assert.equal(again.status, 404);
    assert.equal(again.body.code, 404);
    assert.equal((await call(cp.url, 'GET', `/sandboxes/${id}`, { key })).status, 404);

    const lost = (await create()).body.sandboxID;
    cluster.nodes.get('node-a')!.sandboxes.delete(lost);
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${lost}`, { key })).status, 204);
    assert.equal((await cp.cp.sandboxes.get(lost))?.state, 'killed');

    const lost2 = (await create()).body.sandboxID;
    cluster.nodes.get('node-a')!.sandboxes.delete(lost2);
    const t = await call(cp.url, 'POST', `/sandboxes/${lost2}/timeout`, { key, body: { timeout: 60 } });
    assert.equal(t.status, 404);
    assert.equal((await cp.cp.sandboxes.get(lost2))?.state, 'killed');
  });

  test('placement: ResourceExhausted on one node tries the next; no capacity anywhere → 503', async () => {
    const b = cluster.addNode('node-b', { cpuCount: 2, memoryBytes: 768n << 20n });
    const a = cluster.nodes.get('node-a')!;
    a.failCreateWith = Code.ResourceExhausted;
    try {
      const r = await create();
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.ok(b.sandboxes.has(r.body.sandboxID), 'landed on node-b after node-a refused');
      // node-b is now full (512 of 768 MiB given out); node-a still refuses
      const none = await create();
      assert.equal(none.status, 503);
      assert.deepEqual({ code: none.body.code, message: none.body.message }, { code: 503, message: 'no node has capacity for this sandbox' });
      a.failCreateWith = undefined;
      a.status = NodeStatus.DRAINING;
      const draining = await create();
      assert.equal(draining.status, 503);
      assert.equal(cluster.calls.filter((c) => c.method === 'Create' && c.nodeId === 'node-a' && c.sandboxId === draining.body?.sandboxID).length, 0);
      const live = await call(cp.url, 'GET', '/admin/teams', { admin: ADMIN_TOKEN });
      assert.ok(live.body.find((t: { id: string }) => t.id === teamId), 'failed creates release their reservation');
      await call(cp.url, 'DELETE', `/sandboxes/${r.body.sandboxID}`, { key });
    } finally {
      a.failCreateWith = undefined;
      a.status = NodeStatus.HEALTHY;
      cluster.nodes.delete('node-b');
    }
  });

  test('a cluster that rejects our token → 502 JSON; fixing the token via the admin API recovers', async () => {
    const clusters = await call(cp.url, 'GET', '/admin/clusters', { admin: ADMIN_TOKEN });
    const id = clusters.body[0].id;
    const wrong = await call(cp.url, 'PATCH', `/admin/clusters/${id}`, { admin: ADMIN_TOKEN, body: { token: 'wrong-token-0123456789abcdef' } });
    assert.equal(wrong.status, 200);
    const r = await create();
    assert.equal(r.status, 502);
    assert.equal(r.body.code, 502);
    const fixed = await call(cp.url, 'PATCH', `/admin/clusters/${id}`, { admin: ADMIN_TOKEN, body: { token: cluster.token } });
    assert.equal(fixed.status, 200);
    assert.equal((await create()).status, 201);
  });

  test('concurrency limit → 429 with E2B wording; a failed create does not use up the limit', async () => {
    const small = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'small', maxConcurrentSandboxes: 2 });
    assert.equal((await create({}, small.key)).status, 201);
    const a = cluster.nodes.get('node-a')!;
    a.failCreateWith = Code.ResourceExhausted;
    assert.equal((await create({}, small.key)).status, 503);
    a.failCreateWith = undefined;
    assert.equal((await create({}, small.key)).status, 201);
    const third = await create({}, small.key);
    assert.equal(third.status, 429);
    assert.equal(third.body.code, 429);
    assert.match(third.body.message, /^You have reached the maximum number of concurrent E2B sandboxes \(2\)/);
  });

  test('the evictor kills at end time via the control link, even if the node would keep it', async () => {
    const r = await create({ timeout: 1 });
    const id = r.body.sandboxID;
    const endAt = (await cp.cp.sandboxes.get(id))!.endAt;
    assert.deepEqual(await cp.cp.evictor.runOnce(endAt - 1), []);
    assert.ok(cluster.nodes.get('node-a')!.sandboxes.has(id));
    const ended = await cp.cp.evictor.runOnce(endAt);
    assert.ok(ended.includes(id));
    assert.ok(!cluster.nodes.get('node-a')!.sandboxes.has(id));
    const del = cluster.calls.find((c) => c.method === 'Delete' && c.sandboxId === id);
    assert.ok(del);
    assert.equal((await call(cp.url, 'GET', `/sandboxes/${id}`, { key })).status, 404);
    assert.equal((await cp.cp.sandboxes.get(id))?.endReason, 'timeout');
  });

  test('the reconciler marks sandboxes their node no longer has as gone, and leaves unlisted nodes alone', async () => {
    const kept = (await create({ timeout: 300 })).body.sandboxID;
    const lost = (await create({ timeout: 300 })).body.sandboxID;
    cluster.nodes.get('node-a')!.sandboxes.delete(lost);
    assert.deepEqual(await cp.cp.reconciler.runOnce(Date.now()), [], 'young sandboxes are left to their create');
    const gone = await cp.cp.reconciler.runOnce(Date.now() + 60_000);
    assert.ok(gone.includes(lost));
    assert.ok(!gone.includes(kept));
    assert.equal((await call(cp.url, 'GET', `/sandboxes/${lost}`, { key })).status, 404);
    assert.equal((await call(cp.url, 'GET', `/sandboxes/${kept}`, { key })).status, 200);

    // a node the edge does not list (e.g. an edge that just restarted) is not taken as proof of anything
    const nodeA = cluster.nodes.get('node-a')!;
    cluster.nodes.delete('node-a');
    try {
      assert.ok(!(await cp.cp.reconciler.runOnce(Date.now() + 60_000)).includes(kept));
    } finally {
      cluster.nodes.set('node-a', nodeA);
    }
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${kept}`, { key })).status, 204);
  });

  test('a create interrupted by a restart stops counting against the limit once its deadline has passed', async () => {
    const now = Date.now();
    await cp.cp.sandboxes.reserve(
      sandbox(teamId, (await cp.cp.clusters.list())[0]!.id, { id: 'iinterrupted000000000', buildId: 'b', envdAccessToken: 'x', startedAt: now, endAt: now + 60_000 }),
      100,
    );
    assert.deepEqual(await cp.cp.evictor.runOnce(now + 1000), []);
    const ended = await cp.cp.evictor.runOnce(now + 10 * 60_000);
    assert.ok(ended.includes('iinterrupted000000000'));
    assert.equal((await cp.cp.sandboxes.get('iinterrupted000000000'))?.endReason, 'create interrupted');
  });

  test('state survives a restart: the new instance lists the sandbox and evicts it at its end', async () => {
    const r = await create({ timeout: 300, metadata: { restart: 'yes' } });
    const id = r.body.sandboxID;
    await cp.close();
    cp = await startControlPlane(env(), dir);
    const list = await call(cp.url, 'GET', `/v2/sandboxes?${sdkMetadataQuery({ restart: 'yes' })}`, { key });
    assert.deepEqual(list.body.map((s: { sandboxID: string }) => s.sandboxID), [id]);
    const conn = await call(cp.url, 'POST', `/v2/sandboxes/${id}/connect`, { key, body: { timeout: 10 } });
    assert.equal(conn.body.envdAccessToken, r.body.envdAccessToken);
    const endAt = (await cp.cp.sandboxes.get(id))!.endAt;
    assert.ok((await cp.cp.evictor.runOnce(endAt)).includes(id));
    assert.ok(!cluster.nodes.get('node-a')!.sandboxes.has(id));
  });

  test('the request log holds one JSON line per request: method, url, status — never keys or bodies', async () => {
    await call(cp.url, 'GET', '/v2/sandboxes?limit=1', { key });
    await cp.close();
    const lines = readFileSync(join(dir, 'requests.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    cp = await startControlPlane(env(), dir);
    assert.ok(lines.some((l) => l.method === 'GET' && l.url === '/v2/sandboxes?limit=1' && l.status === 200 && typeof l.durationMs === 'number'));
    assert.ok(lines.some((l) => l.method === 'POST' && l.url === '/v2/sandboxes' && l.status === 201));
    const text = readFileSync(join(dir, 'requests.jsonl'), 'utf8');
    assert.ok(!text.includes(key), 'API key never logged');
    assert.ok(!text.includes(ADMIN_TOKEN), 'admin token never logged');
    assert.ok(!text.includes(cluster.token), 'cluster token never logged');
    assert.ok(!text.includes('a&b=c'), 'bodies never logged');
  });
});
