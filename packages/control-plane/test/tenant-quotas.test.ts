// Per-team quotas over real HTTP into a real control plane and the wire-level cluster fixture, on SQLite and a
// throwaway PostgreSQL: concurrent template builds, templates, and persistent snapshots. A team at a quota gets
// 429 `{code, message, error_code}` (the SDK's RateLimitError), parallel requests cannot overshoot, freeing room
// lets the next request through, other teams are not affected, and the admin API sets or resets a team's quota.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';
import { BUILT_IN_TEMPLATES } from '../src/store/cluster-store.js';

for (const engine of ['sqlite', 'postgres'] as const)
describe(`per-team quotas (${engine} store)`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  let dir: string;
  let pgServer: ThrowawayPostgres | undefined;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let clusterId: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-quota-'));
    if (engine === 'postgres') pgServer = await startPostgres();
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane(
      { COVE_DB_URL: pgServer ? pgServer.url : join(dir, 'cp.db'), COVE_DEFAULT_MAX_CONCURRENT_BUILDS: '4', COVE_DEFAULT_MAX_TEMPLATES: '7', COVE_DEFAULT_MAX_SNAPSHOTS: '9' },
      dir,
    );
    ({ clusterId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'first', maxConcurrentSandboxes: 50 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    pgServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function team(name: string, quotas: Record<string, number>): Promise<{ key: string; id: string }> {
    const r = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name, clusterId, maxConcurrentSandboxes: 50, ...quotas } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return { key: r.body.apiKey.key, id: r.body.team.id };
  }
  const api = (method: string, path: string, key: string, body?: unknown) => call(cp.url, method, path, { key, body });
  const register = (key: string, name: string) => api('POST', '/v3/templates', key, { name, cpuCount: 1, memoryMB: 256 });
  const start = (key: string, r: { body: { templateID: string; buildID: string } }) =>
    api('POST', `/v2/templates/${r.body.templateID}/builds/${r.body.buildID}`, key, { fromTemplate: 'base', steps: [] });
  const finish = async (key: string, r: { body: { templateID: string; buildID: string } }) => {
    cluster.finish(r.body.buildID, { ok: true });
    // Build status is served by the cluster (the route redirects, recording the node's state on the way).
    assert.equal((await api('GET', `/templates/${r.body.templateID}/builds/${r.body.buildID}/status`, key)).status, 307);
    await cp.cp.buildWatcher.runOnce();
    assert.equal((await cp.cp.templateStore.getBuild(r.body.buildID))?.status, 'ready');
  };
  const limited = (r: { status: number; body: any; headers?: Record<string, unknown> }, errorCode: string, what: RegExp) => {
    assert.equal(r.status, 429, JSON.stringify(r.body));
    assert.equal(r.body.code, 429);
    assert.equal(r.body.error_code, errorCode);
    assert.match(r.body.message, what);
    assert.equal(r.headers?.['retry-after'], undefined, 'no Retry-After: only the team freeing room helps, not waiting');
  };

  test('admin API: quotas default to the deployment settings, can be set per team, and reset with null', async () => {
    const t = await team('defaults', {});
    const view = (await call(cp.url, 'GET', `/admin/teams/${t.id}`, { admin: ADMIN_TOKEN })).body;
    assert.deepEqual([view.maxConcurrentBuilds, view.maxTemplates, view.maxSnapshots], [4, 7, 9]);
    const set = await call(cp.url, 'PATCH', `/admin/teams/${t.id}`, { admin: ADMIN_TOKEN, body: { maxTemplates: 2, maxSnapshots: 0 } });
    assert.deepEqual([set.status, set.body.maxConcurrentBuilds, set.body.maxTemplates, set.body.maxSnapshots], [200, 4, 2, 0]);
    const reset = await call(cp.url, 'PATCH', `/admin/teams/${t.id}`, { admin: ADMIN_TOKEN, body: { maxTemplates: null } });
    assert.deepEqual([reset.body.maxTemplates, reset.body.maxSnapshots], [7, 0]);
    for (const body of [{ maxTemplates: -1 }, { maxConcurrentBuilds: 1.5 }, { maxSnapshots: '3' }]) {
      const bad = await call(cp.url, 'PATCH', `/admin/teams/${t.id}`, { admin: ADMIN_TOKEN, body });
      assert.equal(bad.status, 400, JSON.stringify(body));
    }
  });

  test('concurrent builds: registering or starting past the quota is 429; a finished build frees room', async () => {
    const t = await team('builder', { maxConcurrentBuilds: 2 });
    const other = await team('bystander', { maxConcurrentBuilds: 2 });
    const one = await register(t.key, 'one');
    const two = await register(t.key, 'two');
    assert.equal((await start(t.key, one)).status, 202);
    assert.equal((await start(t.key, two)).status, 202);
    limited(await register(t.key, 'three'), 'template_build_limit', /limit of 2 concurrent template builds/);
    limited(await register(t.key, 'one'), 'template_build_limit', /concurrent template builds/);
    const theirs = await register(other.key, 'three');
    assert.equal(theirs.status, 202, 'another team has its own quota');
    assert.equal((await start(other.key, theirs)).status, 202);

    await finish(t.key, one);
    const three = await register(t.key, 'three');
    assert.equal(three.status, 202, JSON.stringify(three.body));
    assert.equal((await start(t.key, three)).status, 202);
    await finish(t.key, two);
    await finish(t.key, three);
    await finish(other.key, theirs);

    // Two registered builds started in parallel against a quota of one: exactly one starts, the other stays waiting.
    const a = await register(t.key, 'race-a');
    const b = await register(t.key, 'race-b');
    assert.equal((await call(cp.url, 'PATCH', `/admin/teams/${t.id}`, { admin: ADMIN_TOKEN, body: { maxConcurrentBuilds: 1 } })).status, 200);
    const raced = await Promise.all([start(t.key, a), start(t.key, b)]);
    assert.deepEqual(raced.map((r) => r.status).sort(), [202, 429]);
    const loser = raced[0]!.status === 429 ? a : b;
    const winner = loser === a ? b : a;
    limited(raced.find((r) => r.status === 429)!, 'template_build_limit', /limit of 1 concurrent/);
    assert.equal((await cp.cp.templateStore.getBuild(loser.body.buildID))?.status, 'waiting');
    await finish(t.key, winner);
    assert.equal((await start(t.key, loser)).status, 202, 'the refused build can be started once room is free');
    await finish(t.key, loser);
  });

  test('templates: a new name past the quota is 429, a rebuild of an existing one is not; deleting frees room', async () => {
    const t = await team('collector', { maxTemplates: 2 });
    for (const name of ['t1', 't2']) {
      const r = await register(t.key, name);
      assert.equal((await start(t.key, r)).status, 202);
      await finish(t.key, r);
    }
    limited(await register(t.key, 't3'), 'template_limit', /limit of 2 templates/);
    const rebuild = await register(t.key, 't1');
    assert.equal(rebuild.status, 202, 'a new build of an existing template is no new template');
    assert.equal((await start(t.key, rebuild)).status, 202);
    await finish(t.key, rebuild);
    // Racing for the last slot: one new template wins.
    assert.equal((await api('DELETE', '/templates/t2', t.key)).status, 204);
    const raced = await Promise.all([register(t.key, 'r1'), register(t.key, 'r2'), register(t.key, 'r3')]);
    assert.deepEqual(raced.map((r) => r.status).sort(), [202, 429, 429]);
    // The team's own templates (GET /templates lists the built-ins too).
    const names = (await api('GET', '/templates', t.key)).body.filter((x: { templateID: string }) => !BUILT_IN_TEMPLATES.some((b) => b.templateId === x.templateID));
    assert.equal(names.length, 2);
  });

  test('persistent snapshots: past the quota is 429 and the sandbox runs on; deleting one frees room', async () => {
    const t = await team('snapper', { maxSnapshots: 1 });
    const sandboxes: string[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await api('POST', '/sandboxes', t.key, { templateID: 'base', timeout: 120 });
      assert.equal(c.status, 201, JSON.stringify(c.body));
      sandboxes.push(c.body.sandboxID);
    }
    // Two sandboxes snapshotted in parallel against a quota of one: exactly one snapshot is taken.
    const snapshotCalls = () => cluster.calls.filter((c) => c.method === 'Snapshot').length;
    const before = snapshotCalls();
    const raced = await Promise.all(sandboxes.slice(0, 2).map((id) => api('POST', `/sandboxes/${id}/snapshots`, t.key, {})));
    assert.deepEqual(raced.map((r) => r.status).sort(), [201, 429]);
    limited(raced.find((r) => r.status === 429)!, 'snapshot_limit', /limit of 1 snapshots/);
    const taken = raced.find((r) => r.status === 201)!.body.snapshotID as string;
    limited(await api('POST', `/sandboxes/${sandboxes[2]}/snapshots`, t.key, { name: 'later' }), 'snapshot_limit', /snapshots/);
    assert.equal(snapshotCalls() - before, 1, 'refused requests never reach a node');
    for (const id of sandboxes) assert.equal((await api('GET', `/sandboxes/${id}`, t.key)).body.state, 'running');
    assert.deepEqual((await api('GET', '/snapshots', t.key)).body.map((s: { snapshotID: string }) => s.snapshotID), [taken]);

    assert.equal((await api('DELETE', `/templates/${taken}`, t.key)).status, 204);
    const again = await api('POST', `/sandboxes/${sandboxes[2]}/snapshots`, t.key, { name: 'later' });
    assert.equal(again.status, 201, JSON.stringify(again.body));
    for (const id of sandboxes) await api('DELETE', `/sandboxes/${id}`, t.key);
  });
});
