// Hostile tenants and template names, through real HTTP into a real control plane and the wire-level cluster
// fixture, on SQLite and on a throwaway PostgreSQL: a team cannot squat or shadow another team's name (names are
// per team; a bare name is the caller's own, then a built-in one), another team's public template is reachable
// only as `slug/name`, a private one not even then; and a store from before per-team names migrates.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Migrator, sql } from 'kysely';
import type { DbConfig } from '../src/config.js';
import { connectDatabase, openDatabase } from '../src/store/database.js';
import { migrationProvider } from '../src/store/migrations.js';
import { TeamStore } from '../src/store/team-store.js';
import { TemplateStore } from '../src/store/template-store.js';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';

for (const engine of ['sqlite', 'postgres'] as const)
describe(`template names between teams (${engine} store)`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  let dir: string;
  let pgServer: ThrowawayPostgres | undefined;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let keyA: string;
  let keyB: string;
  let slugA: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-names-'));
    if (engine === 'postgres') pgServer = await startPostgres();
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane({ COVE_DB_URL: pgServer ? pgServer.url : join(dir, 'cp.db') }, dir);
    const a = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'Alpha Team', maxConcurrentSandboxes: 50 });
    keyA = a.key;
    slugA = (await call(cp.url, 'GET', `/admin/teams/${a.teamId}`, { admin: ADMIN_TOKEN })).body.slug;
    const b = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'Bravo', slug: 'bravo', clusterId: a.clusterId, maxConcurrentSandboxes: 50 } });
    assert.equal(b.status, 201, JSON.stringify(b.body));
    assert.equal(b.body.team.slug, 'bravo');
    keyB = b.body.apiKey.key;
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    pgServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const api = (method: string, path: string, key: string, body?: unknown) => call(cp.url, method, path, { key, body });

  /** Registers, starts and finishes a build of `name` for the key's team; returns its ids. */
  async function built(name: string, key: string) {
    const r = await api('POST', '/v3/templates', key, { name, cpuCount: 1, memoryMB: 256 });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const s = await api('POST', `/v2/templates/${r.body.templateID}/builds/${r.body.buildID}`, key, { fromTemplate: 'base', steps: [] });
    assert.equal(s.status, 202, JSON.stringify(s.body));
    cluster.finish(r.body.buildID, { ok: true });
    // Build status is served by the cluster (the route redirects, recording the node's state on the way).
    assert.equal((await api('GET', `/templates/${r.body.templateID}/builds/${r.body.buildID}/status`, key)).status, 307);
    await cp.cp.buildWatcher.runOnce();
    assert.equal((await cp.cp.templateStore.getBuild(r.body.buildID))?.status, 'ready');
    return { templateID: r.body.templateID as string, buildID: r.body.buildID as string };
  }

  /** Creates a sandbox from `ref` and returns the template id the node was asked to run (then kills it). */
  async function runs(ref: string, key: string): Promise<string> {
    const c = await api('POST', '/sandboxes', key, { templateID: ref, timeout: 60 });
    assert.equal(c.status, 201, `${ref}: ${JSON.stringify(c.body)}`);
    const create = cluster.calls.find((x) => x.method === 'Create' && x.sandboxId === c.body.sandboxID);
    assert.equal((await api('DELETE', `/sandboxes/${c.body.sandboxID}`, key)).status, 204);
    return create!.templateId!;
  }

  test('teams get a unique slug: derived from the name, or chosen (409 when taken, 400 when malformed)', async () => {
    assert.equal(slugA, 'alpha-team');
    const again = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'Alpha  Team!' } });
    assert.equal(again.status, 201);
    assert.match(again.body.team.slug, /^alpha-team-[a-z0-9]{6}$/, 'a derived slug that is taken gets a suffix');
    const taken = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'x', slug: 'bravo' } });
    assert.deepEqual([taken.status, taken.body.code], [409, 409]);
    for (const slug of ['Bravo', 'a/b', 'a:b', '-a', '']) {
      const bad = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'x', slug } });
      assert.equal(bad.status, 400, `slug ${JSON.stringify(slug)} → ${bad.status}`);
    }
  });

  test("squatting: team B building a name team A uses makes B's own template; each team's bare name is its own", async () => {
    const a = await built('shared-app', keyA);
    // B tries to take (or shadow) A's name: it gets an independent template of its own.
    const b = await built('shared-app', keyB);
    assert.notEqual(b.templateID, a.templateID);
    assert.equal(await runs('shared-app', keyA), a.templateID);
    assert.equal(await runs('shared-app:default', keyA), a.templateID);
    assert.equal(await runs('shared-app', keyB), b.templateID);
    assert.equal(await runs(`${slugA}/shared-app`, keyA), a.templateID, 'the own namespace names the own template');
    assert.deepEqual((await api('GET', '/templates/aliases/shared-app', keyA)).body, { templateID: a.templateID, public: false });
    assert.deepEqual((await api('GET', '/templates/aliases/shared-app', keyB)).body, { templateID: b.templateID, public: false });
    assert.equal((await api('GET', '/templates/shared-app', keyA)).body.templateID, a.templateID);
    assert.equal((await api('GET', '/templates/shared-app', keyB)).body.templateID, b.templateID);
    // A rebuild by either team stays within its own template.
    const rebuilt = await api('POST', '/v3/templates', keyB, { name: 'shared-app' });
    assert.equal(rebuilt.body.templateID, b.templateID);
    // B deleting "shared-app" deletes its own; A's still runs.
    assert.equal((await api('DELETE', '/templates/shared-app', keyB)).status, 204);
    assert.equal(await runs('shared-app', keyA), a.templateID);
    assert.equal((await api('POST', '/sandboxes', keyB, { templateID: 'shared-app' })).status, 404);
    // Built-in names stay reserved for everyone.
    const base = await api('POST', '/v3/templates', keyB, { name: 'base' });
    assert.equal(base.status, 409);
    assert.equal(await runs('base', keyB), 'base');
  });

  test("another team's public template: not by bare name, only as slug/name; a private one not even then", async () => {
    const pub = await built('b-public', keyB);
    const priv = await built('b-private', keyB);
    assert.equal((await api('PATCH', `/v2/templates/${pub.templateID}`, keyB, { public: true })).status, 200);

    assert.equal((await api('POST', '/sandboxes', keyA, { templateID: 'b-public' })).status, 404, 'a bare name never reaches another team');
    assert.equal(await runs('bravo/b-public', keyA), pub.templateID);
    assert.equal(await runs('bravo/b-public:default', keyA), pub.templateID);
    const alias = await api('GET', `/templates/aliases/${encodeURIComponent('bravo/b-public')}`, keyA);
    assert.deepEqual([alias.status, alias.body], [200, { templateID: pub.templateID, public: true }]);
    const child = await api('POST', '/v3/templates', keyA, { name: 'on-top' });
    const started = await api('POST', `/v2/templates/${child.body.templateID}/builds/${child.body.buildID}`, keyA, { fromTemplate: 'bravo/b-public', steps: [] });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    assert.deepEqual(cluster.findBuild(child.body.buildID)!.build.request.source, { case: 'fromBuildId', value: pub.buildID });

    // The private one: 404 everywhere, with or without the namespace (no 403 telling it exists).
    for (const ref of ['b-private', 'bravo/b-private', 'bravo/b-private:default', priv.templateID]) {
      const r = await api('POST', '/sandboxes', keyA, { templateID: ref });
      assert.equal(r.status, 404, `${ref} → ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal((await api('GET', `/templates/aliases/${encodeURIComponent(ref)}`, keyA)).status, 404, `alias ${ref}`);
    }
    const onPrivate = await api('POST', '/v3/templates', keyA, { name: 'on-private' });
    const refused = await api('POST', `/v2/templates/${onPrivate.body.templateID}/builds/${onPrivate.body.buildID}`, keyA, { fromTemplate: 'bravo/b-private', steps: [] });
    assert.equal(refused.status, 400);
    // A public template is usable, never changeable, through its namespace either.
    assert.equal((await api('DELETE', `/templates/${encodeURIComponent('bravo/b-public')}`, keyA)).status, 404);
    assert.equal((await api('PATCH', `/v2/templates/${encodeURIComponent('bravo/b-public')}`, keyA, { public: false })).status, 404);
    // A's own name wins over a stranger's template whose id happens to spell it.
    const lookalike = await built(pub.templateID, keyA);
    assert.equal(await runs(pub.templateID, keyA), lookalike.templateID);
    assert.equal(await runs(pub.templateID, keyB), pub.templateID, 'for B the id is still its own template');
    // Unpublished, it is gone for team A again.
    assert.equal((await api('PATCH', `/v2/templates/${pub.templateID}`, keyB, { public: false })).status, 200);
    assert.equal((await api('POST', '/sandboxes', keyA, { templateID: 'bravo/b-public' })).status, 404);
  });

  test("snapshots are never reachable through another team's namespace; the own namespace reaches them", async () => {
    const sbx = await api('POST', '/sandboxes', keyB, { templateID: 'base', timeout: 60 });
    assert.equal(sbx.status, 201);
    const snap = await api('POST', `/sandboxes/${sbx.body.sandboxID}/snapshots`, keyB, { name: 'golden' });
    assert.equal(snap.status, 201, JSON.stringify(snap.body));
    for (const ref of ['golden', 'bravo/golden', 'bravo/golden:default', snap.body.snapshotID]) {
      assert.equal((await api('POST', '/sandboxes', keyA, { templateID: ref })).status, 404, `A from ${ref}`);
    }
    assert.deepEqual((await api('GET', `/snapshots?name=${encodeURIComponent('bravo/golden')}`, keyA)).body, []);
    assert.equal((await api('DELETE', `/templates/${encodeURIComponent('bravo/golden')}`, keyA)).status, 404);
    const own = await api('POST', '/sandboxes', keyB, { templateID: 'bravo/golden' });
    assert.equal(own.status, 201, JSON.stringify(own.body));
    assert.deepEqual((await api('GET', `/snapshots?name=${encodeURIComponent('bravo/golden')}`, keyB)).body.map((x: { snapshotID: string }) => x.snapshotID), [snap.body.snapshotID]);
    for (const id of [sbx.body.sandboxID, own.body.sandboxID]) await api('DELETE', `/sandboxes/${id}`, keyB);
    assert.equal((await api('DELETE', `/templates/${encodeURIComponent('bravo/golden')}`, keyB)).status, 204);
  });

  test("nobody builds into another team's namespace; the own namespace is the bare name", async () => {
    const into = await api('POST', '/v3/templates', keyA, { name: 'bravo/planted' });
    assert.equal(into.status, 403, JSON.stringify(into.body));
    assert.equal((await api('GET', '/templates/aliases/planted', keyB)).status, 404);
    const own = await api('POST', '/v3/templates', keyA, { name: `${slugA}/mine:v1` });
    assert.equal(own.status, 202, JSON.stringify(own.body));
    assert.deepEqual([own.body.names, own.body.tags], [['mine'], ['v1']]);
    for (const name of ['Bad/x', 'a/b/c', '/x', 'x/']) {
      const bad = await api('POST', '/v3/templates', keyA, { name });
      assert.equal(bad.status, 400, `${name} → ${bad.status}`);
    }
  });
});

for (const engine of ['sqlite', 'postgres'] as const)
describe(`a store from before per-team names migrates (${engine})`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  test('teams get distinct slugs, templates keep resolving, and another team may now use a taken name', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cove-cp-mig-'));
    const pgServer = engine === 'postgres' ? await startPostgres() : undefined;
    const config: DbConfig = pgServer ? { kind: 'postgres', url: pgServer.url } : { kind: 'sqlite', path: join(dir, 'cp.db') };
    try {
      const old = connectDatabase(config);
      const to3 = await new Migrator({ db: old, provider: migrationProvider }).migrateTo('0003_pause_resume');
      assert.equal(to3.error, undefined);
      const now = Date.now();
      await sql`insert into clusters (id, name, endpoint, token, sandbox_domain, created_at, updated_at) values ('c1', 'c1', 'http://x', ${'t'.repeat(20)}, null, ${now}, ${now})`.execute(old);
      for (const [id, name, at] of [['t-1', 'Same Name', now], ['t-2', 'Same Name', now + 1], ['t-3', '!!!', now + 2]] as const) {
        await sql`insert into teams (id, name, cluster_id, max_concurrent_sandboxes, max_timeout_hours, created_at) values (${id}, ${name}, 'c1', 5, 1, ${at})`.execute(old);
      }
      await sql`insert into templates (cluster_id, template_id, alias, build_id, cpu_count, memory_mb, disk_mb, envd_version, public, build_status, spawn_count, created_at, updated_at, team_id)
        values ('c1', 'tplone', 'app', 'b1', 1, 256, 1024, '0.6.4', 0, 'ready', 0, ${now}, ${now}, 't-1')`.execute(old);
      await old.destroy();

      const db = await openDatabase(config);
      try {
        const teams = new TeamStore(db.kysely);
        const slugs = (await teams.list()).map((t) => t.slug);
        assert.equal(slugs[0], 'same-name', 'the oldest team keeps the plain slug');
        assert.match(slugs[1]!, /^same-name-t2$/);
        assert.equal(slugs[2], 'team');
        const templates = new TemplateStore(db.kysely, db.kind);
        assert.equal((await templates.find('c1', 't-1', 'app'))?.templateId, 'tplone');
        assert.equal(await templates.find('c1', 't-2', 'app'), undefined, "another team's name is not reached bare");
        assert.equal((await templates.find('c1', 't-2', 'same-name/app'))?.templateId, 'tplone');
        const mine = await templates.requestBuild({ clusterId: 'c1', teamId: 't-2', name: 'app', tags: ['default'], cpuCount: 1, memoryMb: 256, diskMb: 1024, templateId: 'tpltwo', buildId: 'b2', maxTemplates: 10, maxConcurrentBuilds: 10 });
        assert.equal(mine.created, true);
        assert.equal((await templates.find('c1', 't-2', 'app'))?.templateId, 'tpltwo');
        // Same team, same name: still one template (the new index).
        assert.equal((await templates.requestBuild({ clusterId: 'c1', teamId: 't-2', name: 'app', tags: ['default'], cpuCount: 1, memoryMb: 256, diskMb: 1024, templateId: 'tplthree', buildId: 'b3', maxTemplates: 10, maxConcurrentBuilds: 10 })).template.templateId, 'tpltwo');
      } finally {
        await db.close();
      }
    } finally {
      pgServer?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
