// The built-in `code-interpreter-v1` template (issue 17) through real HTTP into a real control plane and the
// wire-level cluster fixture, on SQLite and on a throwaway PostgreSQL: every team reaches it by name at E2B's size;
// no team can build over it, retag, unpublish or delete it, or take its name for a snapshot; and a deployment
// from before it existed gains it on the control plane's next start without a row of anything else changing.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CODE_INTERPRETER_TEMPLATE_ID as CI, DESKTOP_TEMPLATE_ID as DESKTOP } from '@cove/contracts/sandbox';
import { NodeStatus } from '@cove/contracts/orchestrator';
import { sql } from 'kysely';
import type { DbConfig } from '../src/config.js';
import { ClusterStore } from '../src/store/cluster-store.js';
import { connectDatabase } from '../src/store/database.js';
import { ADMIN_TOKEN, PUBLIC_URL, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';

for (const engine of ['sqlite', 'postgres'] as const)
describe(`built-in ${CI} (${engine} store)`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  let dir: string;
  let pgServer: ThrowawayPostgres | undefined;
  let dbConfig: DbConfig;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let keyA: string;
  let keyB: string;
  let slugA: string;
  let clusterId: string;

  const start = async () => {
    cp = await startControlPlane({ COVE_DB_URL: pgServer ? pgServer.url : join(dir, 'cp.db') }, dir);
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-builtin-'));
    if (engine === 'postgres') pgServer = await startPostgres();
    dbConfig = pgServer ? { kind: 'postgres', url: pgServer.url } : { kind: 'sqlite', path: join(dir, 'cp.db') };
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    await start();
    const a = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'Alpha', maxConcurrentSandboxes: 50 });
    keyA = a.key;
    clusterId = a.clusterId;
    slugA = (await call(cp.url, 'GET', `/admin/teams/${a.teamId}`, { admin: ADMIN_TOKEN })).body.slug;
    const b = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'Bravo', slug: 'bravo', clusterId, maxConcurrentSandboxes: 50 } });
    assert.equal(b.status, 201, JSON.stringify(b.body));
    keyB = b.body.apiKey.key;
  });

  after(async () => {
    await cp?.close();
    await cluster?.close();
    pgServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const api = (method: string, path: string, key: string, body?: unknown) => call(cp.url, method, path, { key, body });

  /** Creates a sandbox from `ref`, returns what the node was asked to run, and kills it. */
  async function runs(ref: string, key: string) {
    const c = await api('POST', '/sandboxes', key, { templateID: ref, timeout: 60 });
    assert.equal(c.status, 201, `${ref}: ${JSON.stringify(c.body)}`);
    const create = cluster.calls.find((x) => x.method === 'Create' && x.sandboxId === c.body.sandboxID)!;
    assert.equal((await api('DELETE', `/sandboxes/${c.body.sandboxID}`, key)).status, 204);
    return { templateId: create.templateId, buildId: create.buildId, vcpu: create.vcpu, memoryMb: create.memoryMb, response: c.body };
  }

  test('every team reaches it by name, public, at 2 vCPU / 2048 MiB; the node is asked for the built-in', async () => {
    for (const key of [keyA, keyB]) {
      const list = await api('GET', '/templates', key);
      assert.equal(list.status, 200);
      const t = (list.body as Array<Record<string, unknown>>).find((x) => x.templateID === CI);
      assert.ok(t, `GET /templates lists ${CI} beside base`);
      assert.deepEqual([t.cpuCount, t.memoryMB, t.public, t.names, t.buildStatus], [2, 2048, true, [CI], 'ready']);
      assert.deepEqual((await api('GET', `/templates/aliases/${CI}`, key)).body, { templateID: CI, public: true });
      assert.equal((await api('GET', `/templates/${CI}`, key)).status, 200);
    }
    for (const ref of [CI, `${CI}:default`]) {
      const r = await runs(ref, keyB);
      assert.deepEqual([r.templateId, r.buildId, r.vcpu, r.memoryMb], [CI, '', 2, 2048], 'a built-in runs as the node’s own (empty build id)');
      assert.equal(r.response.templateID, CI);
    }
    const tagged = await api('POST', '/sandboxes', keyA, { templateID: `${CI}:other`, timeout: 60 });
    assert.equal(tagged.status, 404, 'a built-in has only the default tag');
  });

  test('desktop (issue 18) is a built-in the same way: public by name, 2 vCPU / 2048 MiB, its name reserved', async () => {
    for (const key of [keyA, keyB]) {
      const t = ((await api('GET', '/templates', key)).body as Array<Record<string, unknown>>).find((x) => x.templateID === DESKTOP);
      assert.ok(t, `GET /templates lists ${DESKTOP}`);
      assert.deepEqual([t.cpuCount, t.memoryMB, t.public, t.names, t.buildStatus], [2, 2048, true, [DESKTOP], 'ready']);
    }
    const r = await runs(DESKTOP, keyB);
    assert.deepEqual([r.templateId, r.buildId, r.vcpu, r.memoryMb], [DESKTOP, '', 2, 2048]);
    const build = await api('POST', '/v3/templates', keyA, { name: DESKTOP, cpuCount: 1, memoryMB: 256 });
    assert.equal(build.status, 409, JSON.stringify(build.body));
    assert.equal((await api('DELETE', `/templates/${DESKTOP}`, keyA)).status, 403);
    assert.equal((await api('PATCH', `/templates/${DESKTOP}`, keyA, { public: false })).status, 403);
  });

  test('no team can build over it, retag, unpublish or delete it, or name a snapshot after it', async () => {
    for (const name of [CI, `${CI}:mine`, `${slugA}/${CI}`]) {
      const r = await api('POST', '/v3/templates', keyA, { name, cpuCount: 1, memoryMB: 256 });
      assert.equal(r.status, 409, `${name}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.message, /built-in/);
    }
    // A build id the team does own, aimed at the built-in.
    const own = await api('POST', '/v3/templates', keyA, { name: 'own-app', cpuCount: 1, memoryMB: 256 });
    assert.equal(own.status, 202);
    const start = await api('POST', `/v2/templates/${CI}/builds/${own.body.buildID}`, keyA, { fromTemplate: 'base', steps: [] });
    assert.equal(start.status, 404, JSON.stringify(start.body));
    assert.equal(cluster.calls.filter((c) => c.method === 'Build').length, 0, 'no node was asked to build anything');

    assert.equal((await api('DELETE', `/templates/${CI}`, keyA)).status, 403);
    assert.equal((await api('PATCH', `/templates/${CI}`, keyA, { public: false })).status, 403);
    assert.equal((await api('PATCH', `/v2/templates/${CI}`, keyB, { public: false })).status, 403);
    assert.equal((await api('POST', '/templates/tags', keyA, { target: `${CI}:default`, tags: ['mine'] })).status, 403);
    assert.equal((await api('DELETE', '/templates/tags', keyA, { name: CI, tags: ['default'] })).status, 403);

    const sb = await api('POST', '/sandboxes', keyA, { templateID: 'base', timeout: 60 });
    assert.equal(sb.status, 201);
    const snap = await api('POST', `/sandboxes/${sb.body.sandboxID}/snapshots`, keyA, { name: CI });
    assert.equal(snap.status, 409, JSON.stringify(snap.body));
    assert.equal((await api('DELETE', `/sandboxes/${sb.body.sandboxID}`, keyA)).status, 204);

    // Still there, unchanged, for everyone.
    const t = (await api('GET', `/templates/aliases/${CI}`, keyB)).body;
    assert.deepEqual(t, { templateID: CI, public: true });
    assert.equal((await runs(CI, keyB)).templateId, CI);
  });

  test('a deployment from before it gains it on restart; running sandboxes and every other row stay as they were', async () => {
    // The state before the upgrade: no built-in of that name, so team A built its own `code-interpreter-v1`
    // (names were free then) and runs sandboxes of it and of base.
    const db = connectDatabase(dbConfig);
    try {
      await sql`delete from templates where template_id = ${CI}`.execute(db);
      const r = await api('POST', '/v3/templates', keyA, { name: CI, cpuCount: 1, memoryMB: 256 });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const mine = r.body.templateID as string;
      assert.equal((await api('POST', `/v2/templates/${mine}/builds/${r.body.buildID}`, keyA, { fromTemplate: 'base', steps: [] })).status, 202);
      cluster.finish(r.body.buildID, { ok: true });
      await cp.cp.buildWatcher.runOnce();
      const running: string[] = [];
      for (const ref of ['base', CI]) {
        const c = await api('POST', '/sandboxes', keyA, { templateID: ref, timeout: 600 });
        assert.equal(c.status, 201, JSON.stringify(c.body));
        running.push(c.body.sandboxID);
      }
      const rowsOf = async (table: 'templates' | 'sandboxes' | 'template_builds' | 'template_tags' | 'teams') =>
        (await sql<Record<string, unknown>>`select * from ${sql.table(table)}`.execute(db)).rows.sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));
      const before: Record<string, unknown> = {};
      for (const t of ['templates', 'sandboxes', 'template_builds', 'template_tags', 'teams'] as const) before[t] = await rowsOf(t);

      // Two control planes starting at once over the same store add it once (the primary key settles the race).
      const other = connectDatabase(dbConfig);
      try {
        const added = await Promise.all([new ClusterStore(db).ensureBuiltIns(), new ClusterStore(other).ensureBuiltIns()]);
        assert.equal(added[0] + added[1], 1);
      } finally {
        await other.destroy();
      }
      await sql`delete from templates where template_id = ${CI}`.execute(db);

      // The upgrade: the control plane restarts (a second `cove up` after an update, or any restart).
      await cp.close();
      await start();
      const builtIn = await sql<{ n: number | string }>`select count(*) as n from templates where template_id = ${CI}`.execute(db);
      assert.equal(Number(builtIn.rows[0]!.n), 1);
      for (const t of ['templates', 'sandboxes', 'template_builds', 'template_tags', 'teams'] as const) {
        const now = (await rowsOf(t)).filter((row) => !(t === 'templates' && row.template_id === CI));
        assert.deepEqual(now, before[t], `${t} rows are unchanged by the upgrade`);
      }
      const listed = (await api('GET', '/sandboxes', keyA)).body as Array<{ sandboxID: string }>;
      assert.deepEqual(listed.map((s) => s.sandboxID).sort(), [...running].sort(), 'running sandboxes are still running');

      // The built-in's name is not shadowed, not even for the team that had built its own of that name; the
      // team's template is kept and reachable by its id and as `slug/name`.
      assert.equal((await runs(CI, keyA)).templateId, CI);
      assert.equal((await runs(CI, keyB)).templateId, CI);
      assert.equal((await runs(mine, keyA)).templateId, mine);
      assert.equal((await runs(`${slugA}/${CI}`, keyA)).templateId, mine);
      assert.equal((await api('GET', `/templates/${mine}`, keyA)).status, 200);

      // A restart with the built-in present adds nothing.
      await cp.close();
      await start();
      assert.equal(await new ClusterStore(db).ensureBuiltIns(), 0);
      for (const id of running) assert.equal((await api('DELETE', `/sandboxes/${id}`, keyA)).status, 204);
    } finally {
      await db.destroy();
    }
  });
  test('registering the cluster again, as every `cove up` does, gives a running control plane a missing built-in', async () => {
    const db = connectDatabase(dbConfig);
    try {
      await sql`delete from templates where template_id = ${CI}`.execute(db);
      // Team B (team A still has its own template of that name from the upgrade test).
      assert.equal((await api('GET', `/templates/aliases/${CI}`, keyB)).status, 404);
      const again = await call(cp.url, 'POST', '/admin/clusters', {
        admin: ADMIN_TOKEN,
        body: { name: `cluster-${cluster.endpoint}`, endpoint: cluster.endpoint, token: cluster.token, sandboxDomain: 'cove.test', publicUrl: PUBLIC_URL },
      });
      assert.equal(again.status, 200, JSON.stringify(again.body));
      assert.equal(again.body.id, clusterId);
      assert.deepEqual((await api('GET', `/templates/aliases/${CI}`, keyB)).body, { templateID: CI, public: true });
    } finally {
      await db.destroy();
    }
  });
  test('its sandboxes, resumes and builds go only to a node that has it ready; none ready is a clear 503', async () => {
    const a = cluster.nodes.get('node-a')!;
    // node-a has more room (it ranks first) but is still building the code interpreter; node-b has it.
    a.readyTemplates = ['base'];
    const b = cluster.addNode('node-b', { cpuCount: 4, readyTemplates: ['base', CI] });
    try {
      const nodeOf = async (id: string) => cluster.calls.filter((c) => c.method === 'Create' && c.sandboxId === id).at(-1)!.nodeId;
      const ci = await api('POST', '/sandboxes', keyB, { templateID: CI, timeout: 120 });
      assert.equal(ci.status, 201, JSON.stringify(ci.body));
      assert.equal(await nodeOf(ci.body.sandboxID), 'node-b');
      assert.equal(cluster.calls.filter((c) => c.method === 'Create' && c.sandboxId === ci.body.sandboxID).length, 1, 'node-a was never asked');
      const base = await api('POST', '/sandboxes', keyB, { templateID: 'base', timeout: 60 });
      assert.equal(await nodeOf(base.body.sandboxID), 'node-a', 'base still goes where there is most room');
      assert.equal((await api('DELETE', `/sandboxes/${base.body.sandboxID}`, keyB)).status, 204);

      // A paused code-interpreter sandbox resumes only where the template is ready.
      assert.equal((await api('POST', `/sandboxes/${ci.body.sandboxID}/pause`, keyB)).status, 204);
      b.status = NodeStatus.DRAINING;
      const creates = cluster.calls.filter((c) => c.method === 'Create').length;
      const builds = cluster.calls.filter((c) => c.method === 'Build').length;
      const resume = await api('POST', `/v2/sandboxes/${ci.body.sandboxID}/connect`, keyB, { timeout: 60 });
      assert.equal(resume.status, 503, JSON.stringify(resume.body));
      assert.equal(resume.body.error_code, 'template_not_ready');
      assert.equal((await api('GET', `/sandboxes/${ci.body.sandboxID}`, keyB)).body.state, 'paused', 'it stays paused');

      // No node has it ready: a clear 503 with its code, and no node is asked.
      const none = await api('POST', '/sandboxes', keyB, { templateID: CI, timeout: 60 });
      assert.equal(none.status, 503, JSON.stringify(none.body));
      assert.equal(none.body.error_code, 'template_not_ready');
      assert.match(none.body.message, /not ready on any node yet/);
      const build = await api('POST', '/v3/templates', keyB, { name: 'on-ci', cpuCount: 1, memoryMB: 256 });
      const start = () => api('POST', `/v2/templates/${build.body.templateID}/builds/${build.body.buildID}`, keyB, { fromTemplate: CI, steps: [] });
      const refused = await start();
      assert.equal(refused.status, 503, JSON.stringify(refused.body));
      assert.equal(refused.body.error_code, 'template_not_ready');
      assert.equal(cluster.calls.filter((c) => c.method === 'Create').length, creates, 'no node was asked to start anything');
      assert.equal(cluster.calls.filter((c) => c.method === 'Build').length, builds);

      // Ready again: the build starts (it stayed waiting) on the node that has it, and the sandbox resumes there.
      b.status = NodeStatus.HEALTHY;
      assert.equal((await start()).status, 202);
      assert.equal(cluster.calls.filter((c) => c.method === 'Build').at(-1)!.nodeId, 'node-b');
      const resumed = await api('POST', `/v2/sandboxes/${ci.body.sandboxID}/connect`, keyB, { timeout: 60 });
      assert.equal(resumed.status, 201, JSON.stringify(resumed.body));
      assert.equal(await nodeOf(ci.body.sandboxID), 'node-b');
      assert.equal((await api('DELETE', `/sandboxes/${ci.body.sandboxID}`, keyB)).status, 204);
    } finally {
      a.readyTemplates = undefined;
      b.status = NodeStatus.DRAINING;
    }
  });
});
