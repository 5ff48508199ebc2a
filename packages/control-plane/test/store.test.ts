// The store against SQLite and a real throwaway PostgreSQL: the same cases, the same code.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { hashApiKey } from '../src/auth/api-key.js';
import type { DbConfig } from '../src/config.js';
import { SandboxLimitReached } from '../src/errors.js';
import { ClusterStore } from '../src/store/cluster-store.js';
import { openDatabase, type Db } from '../src/store/database.js';
import { SandboxStore } from '../src/store/sandbox-store.js';
import { SnapshotStore, type SnapshotRecord } from '../src/store/snapshot-store.js';
import { TeamStore } from '../src/store/team-store.js';
import { TemplateStore } from '../src/store/template-store.js';
import { newBuildId, newTemplateId } from '../src/templates/names.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';
import { sandbox } from './fixtures/sandbox-record.js';

/** Quotas high enough not to matter here (tenant-quotas.test.ts tests them). */
const QUOTAS = { maxTemplates: 1000, maxConcurrentBuilds: 1000 };

for (const engine of ['sqlite', 'postgres'] as const) {
  describe(`store on ${engine}`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
    let dir: string;
    let pgServer: ThrowawayPostgres | undefined;
    let dbConfig: DbConfig;
    let db: Db;
    let teams: TeamStore;
    let clusters: ClusterStore;
    let sandboxes: SandboxStore;
    let clusterId: string;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'cove-cp-store-'));
      if (engine === 'postgres') {
        pgServer = await startPostgres();
        dbConfig = { kind: 'postgres', url: pgServer.url };
      } else dbConfig = { kind: 'sqlite', path: join(dir, 'cp.db') };
      db = await openDatabase(dbConfig);
      teams = new TeamStore(db.kysely);
      clusters = new ClusterStore(db.kysely);
      sandboxes = new SandboxStore(db.kysely, db.kind);
      clusterId = (await clusters.register({ name: 'c1', endpoint: 'http://127.0.0.1:1', token: 't'.repeat(20), sandboxDomain: 'cove.test' })).cluster.id;
    });

    after(async () => {
      await db?.close();
      pgServer?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('migrations are idempotent: reopening the store keeps its data', async () => {
      const again = await openDatabase(dbConfig);
      try {
        assert.equal((await new ClusterStore(again.kysely).list()).length, 1);
      } finally {
        await again.close();
      }
    });

    test('cluster registration is idempotent on identical config and refuses a different one', async () => {
      const spec = { name: 'c1', endpoint: 'http://127.0.0.1:1', token: 't'.repeat(20), sandboxDomain: 'cove.test' };
      const again = await clusters.register(spec);
      assert.equal(again.created, false);
      assert.equal(again.cluster.id, clusterId);
      await assert.rejects(clusters.register({ ...spec, token: 'u'.repeat(20) }), { code: 'conflict' });
      const t = await clusters.findTemplate(clusterId, 'base');
      assert.equal(t?.templateId, 'base');
      assert.equal((await clusters.findTemplate(clusterId, 'base:default'))?.templateId, 'base');
      assert.equal(await clusters.findTemplate(clusterId, 'nope'), undefined);
    });

    test('API keys are stored as sha256 only and resolve to their team', async () => {
      const team = await teams.create({ name: 'keys', clusterId, maxConcurrentSandboxes: 5, maxTimeoutHours: 1 });
      const k = await teams.createApiKey(team.id, 'default');
      assert.match(k.key, /^e2b_[0-9a-f]{40}$/);
      assert.equal(k.mask, `e2b_…${k.key.slice(-4)}`);
      const rows = await db.kysely.selectFrom('api_keys').selectAll().execute();
      const dump = JSON.stringify(rows);
      assert.ok(!dump.includes(k.key), 'the clear key must not be stored');
      assert.ok(!dump.includes(k.key.slice(4)), 'not even without its prefix');
      assert.ok(rows.some((r) => r.key_hash === hashApiKey(k.key)));
      assert.equal((await teams.teamByApiKey(k.key))?.id, team.id);
      assert.equal(await teams.teamByApiKey(`e2b_${'0'.repeat(40)}`), undefined);
      const rotated = await teams.rotateApiKey(team.id, k.id);
      assert.notEqual(rotated.key, k.key);
      assert.equal(await teams.teamByApiKey(k.key), undefined);
      assert.equal((await teams.teamByApiKey(rotated.key))?.id, team.id);
    });

    test('reserve enforces the concurrency limit, also under parallel creates', async () => {
      const team = await teams.create({ name: 'limits', clusterId, maxConcurrentSandboxes: 3, maxTimeoutHours: 1 });
      const results = await Promise.allSettled(Array.from({ length: 8 }, () => sandboxes.reserve(sandbox(team.id, clusterId), 3)));
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3);
      for (const r of results) if (r.status === 'rejected') assert.ok(r.reason instanceof SandboxLimitReached);
      assert.equal(await sandboxes.countLive(team.id), 3);
    });

    test('reserve counts only the team\'s live sandboxes and stores the row whole', async () => {
      const team = await teams.create({ name: 'limit-edges', clusterId, maxConcurrentSandboxes: 2, maxTimeoutHours: 1 });
      const other = await teams.create({ name: 'limit-other', clusterId, maxConcurrentSandboxes: 2, maxTimeoutHours: 1 });
      for (let i = 0; i < 2; i++) await sandboxes.reserve(sandbox(other.id, clusterId), 2);
      const first = sandbox(team.id, clusterId, { metadata: { k: 'v' }, network: { allowOut: ['1.2.3.4/32'] }, trafficAccessToken: 'tok', autoPause: true });
      await sandboxes.reserve(first, 2);
      assert.deepEqual(await sandboxes.get(first.id), { ...first, state: 'creating' }, 'every field as given');
      const second = sandbox(team.id, clusterId);
      await sandboxes.reserve(second, 2);
      await assert.rejects(sandboxes.reserve(sandbox(team.id, clusterId), 2), SandboxLimitReached);
      await assert.rejects(sandboxes.reserve(sandbox(team.id, clusterId), 0), SandboxLimitReached);
      // An ended sandbox frees its place; the refused ones left no row.
      await sandboxes.markKilled(second.id, 'killed', Date.now());
      assert.equal(await sandboxes.countLive(team.id), 1);
      await sandboxes.reserve(sandbox(team.id, clusterId), 2);
      assert.equal(await sandboxes.countLive(team.id), 2);
      assert.equal(await sandboxes.countLive(other.id), 2);
    });

    test('running sandboxes: list filters, orders and pages; end times; kill', async () => {
      const team = await teams.create({ name: 'list', clusterId, maxConcurrentSandboxes: 50, maxTimeoutHours: 1 });
      const base = Date.now() - 100_000;
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const s = sandbox(team.id, clusterId, { startedAt: base + i * 1000, metadata: { i: String(i), parity: i % 2 ? 'odd' : 'even' } });
        await sandboxes.reserve(s, 50);
        await sandboxes.markRunning(s.id, 'n1', '0.6.4');
        ids.push(s.id);
      }
      const page1 = await sandboxes.list(team.id, { order: 'desc', limit: 3 });
      assert.deepEqual(page1.items.map((s) => s.id), [ids[6], ids[5], ids[4]]);
      assert.ok(page1.next);
      const page2 = await sandboxes.list(team.id, { order: 'desc', limit: 3, cursor: page1.next });
      assert.deepEqual(page2.items.map((s) => s.id), [ids[3], ids[2], ids[1]]);
      const page3 = await sandboxes.list(team.id, { order: 'desc', limit: 3, cursor: page2.next });
      assert.deepEqual(page3.items.map((s) => s.id), [ids[0]]);
      assert.equal(page3.next, undefined);
      const asc = await sandboxes.list(team.id, { order: 'asc', limit: 100 });
      assert.deepEqual(asc.items.map((s) => s.id), ids);
      const odd = await sandboxes.list(team.id, { order: 'asc', limit: 2, metadata: { parity: 'odd' } });
      assert.deepEqual(odd.items.map((s) => s.id), [ids[1], ids[3]]);
      const after3 = await sandboxes.list(team.id, { order: 'asc', limit: 100, startedAfter: base + 3000 });
      // Inclusive: the one that started at exactly base + 3000 is listed.
      assert.deepEqual(after3.items.map((s) => s.id), ids.slice(3));

      // end times: extend only moves later, set moves anywhere
      const s0 = (await sandboxes.get(ids[0]!))!;
      assert.equal(await sandboxes.extendEndAt(s0.id, s0.endAt - 5000), s0.endAt);
      assert.equal(await sandboxes.extendEndAt(s0.id, s0.endAt + 5000), s0.endAt + 5000);
      await sandboxes.setEndAt(s0.id, base);
      assert.equal((await sandboxes.get(s0.id))!.endAt, base);
      const due = await sandboxes.due(Date.now());
      assert.ok(due.some((d) => d.id === s0.id));
      assert.equal(await sandboxes.markKilled(s0.id, 'timeout', Date.now()), true);
      assert.equal(await sandboxes.markKilled(s0.id, 'timeout', Date.now()), false);
      assert.equal(await sandboxes.getRunning(team.id, s0.id), undefined);
      assert.equal((await sandboxes.get(s0.id))!.state, 'killed');
      assert.ok(!(await sandboxes.due(Date.now())).some((d) => d.id === s0.id));
    });

    test('template names are per team: two teams racing for the same new name each get their own template', async () => {
      const templates = new TemplateStore(db.kysely, db.kind);
      const a = await teams.create({ name: 'tpl-a', clusterId, maxConcurrentSandboxes: 5, maxTimeoutHours: 1 });
      const b = await teams.create({ name: 'tpl-b', clusterId, maxConcurrentSandboxes: 5, maxTimeoutHours: 1 });
      const req = (teamId: string, name: string, tags = ['default']) =>
        templates.requestBuild({ clusterId, teamId, name, tags, cpuCount: 1, memoryMb: 256, diskMb: 1024, templateId: newTemplateId(), buildId: newBuildId(), ...QUOTAS });
      const raced = await Promise.all([req(a.id, 'raced'), req(b.id, 'raced'), req(a.id, 'raced'), req(b.id, 'raced')]);
      const ofA = raced.filter((r) => r.template.teamId === a.id);
      const ofB = raced.filter((r) => r.template.teamId === b.id);
      assert.equal(ofA.length, 2);
      assert.equal(ofB.length, 2);
      assert.equal(ofA[0]!.template.templateId, ofA[1]!.template.templateId, "a team's two builds of a name are one template");
      assert.equal(ofB[0]!.template.templateId, ofB[1]!.template.templateId);
      assert.notEqual(ofA[0]!.template.templateId, ofB[0]!.template.templateId);
      assert.equal((await templates.find(clusterId, a.id, 'raced'))?.teamId, a.id);
      assert.equal((await templates.find(clusterId, b.id, 'raced'))?.teamId, b.id);
      assert.equal((await templates.find(clusterId, a.id, `${b.slug}/raced`))?.teamId, b.id, 'the namespace names the other team');
      assert.equal((await templates.listBuilding()).length, 0);
      await assert.rejects(req(a.id, 'base'), { code: 'conflict' });
    });

    test('a tag names its newest ready build; unfinished and failed builds never take it over', async () => {
      const templates = new TemplateStore(db.kysely, db.kind);
      const team = await teams.create({ name: 'tpl-tags', clusterId, maxConcurrentSandboxes: 5, maxTimeoutHours: 1 });
      const req = (tags: string[]) =>
        templates.requestBuild({ clusterId, teamId: team.id, name: 'tags', tags, cpuCount: 1, memoryMb: 256, diskMb: 1024, templateId: newTemplateId(), buildId: newBuildId(), ...QUOTAS });
      const one = await req(['default', 'v1']);
      const t = one.template.templateId;
      assert.equal((await templates.resolveTag(clusterId, t, 'default')).build, undefined);
      assert.equal(await templates.claim(one.build.buildId, { fromBuildId: 'base' }), true);
      assert.equal(await templates.claim(one.build.buildId, { fromBuildId: 'base' }), false, 'a build starts once');
      assert.equal(await templates.finish(one.build.buildId, { status: 'ready', envdVersion: '0.6.4', diskMb: 2048 }), true);
      assert.equal(await templates.finish(one.build.buildId, { status: 'error' }), false, 'a build ends once');
      const two = await req(['default']);
      assert.equal((await templates.resolveTag(clusterId, t, 'default')).build?.buildId, one.build.buildId, 'waiting build does not take the tag');
      await templates.claim(two.build.buildId, { fromImage: 'debian:bookworm' });
      await templates.finish(two.build.buildId, { status: 'error', reason: { message: 'boom', step: '1' } });
      const r = await templates.resolveTag(clusterId, t, 'default');
      assert.equal(r.build?.buildId, one.build.buildId);
      assert.equal(r.latest?.buildId, two.build.buildId);
      assert.deepEqual(r.latest?.reason, { message: 'boom', step: '1' });
      assert.deepEqual((await templates.getBuild(two.build.buildId))?.source, { fromImage: 'debian:bookworm' });
      const three = await req(['default']);
      await templates.claim(three.build.buildId, { fromBuildId: one.build.buildId });
      await templates.finish(three.build.buildId, { status: 'ready', envdVersion: '0.6.4' });
      assert.equal((await templates.resolveTag(clusterId, t, 'default')).build?.buildId, three.build.buildId);
      assert.deepEqual((await templates.listTags(clusterId, t)).map((x) => [x.tag, x.buildId]), [['default', three.build.buildId], ['v1', one.build.buildId]]);
      const summary = await templates.find(clusterId, team.id, 'tags');
      assert.deepEqual([summary?.buildId, summary?.buildStatus, summary?.envdVersion], [three.build.buildId, 'ready', '0.6.4']);
      assert.deepEqual(await templates.removeTags(clusterId, t, ['v1', 'zz']), ['zz']);
      assert.deepEqual(await templates.removeTags(clusterId, t, ['v1']), []);
      await templates.remove(clusterId, t);
      assert.equal(await templates.find(clusterId, team.id, t), undefined);
      assert.equal(await templates.getBuild(one.build.buildId), undefined);
    });

    test('pause and resume transitions are conditional; paused sandboxes do not count against the limit', async () => {
      const snapshots = new SnapshotStore(db.kysely, db.kind);
      const team = await teams.create({ name: 'pause', clusterId, maxConcurrentSandboxes: 1, maxTimeoutHours: 1 });
      const s = sandbox(team.id, clusterId);
      await sandboxes.reserve(s, 1);
      await sandboxes.markRunning(s.id, 'n1', '0.6.4');
      const snap = (id: string): SnapshotRecord => ({
        id, teamId: team.id, clusterId, kind: 'pause', status: 'ready', sandboxId: s.id, templateId: 'base', alias: 'base', buildId: 'b1',
        nodeBuildId: '', envdVersion: '0.6.4', cpuCount: 2, memoryMb: 512, diskMb: 1024, memory: true, name: null, sizeBytes: 10, nodeId: 'n1', createdAt: Date.now(),
      });
      assert.equal(await sandboxes.beginPause(s.id, 'p1', true, Date.now()), true);
      assert.equal(await sandboxes.beginPause(s.id, 'p2', true, Date.now()), false, 'one pause wins');
      assert.equal(await sandboxes.finishPause(s.id, snap('p2'), Date.now()), false, 'only the pause that began commits');
      assert.equal(await sandboxes.finishPause(s.id, snap('p1'), Date.now()), true);
      assert.equal((await sandboxes.get(s.id))?.state, 'paused');
      assert.equal(await sandboxes.countLive(team.id), 0);
      assert.equal((await sandboxes.getVisible(team.id, s.id))?.pauseSnapshotId, 'p1');
      assert.deepEqual((await sandboxes.list(team.id, { order: 'desc', limit: 10, states: ['paused'] })).items.map((x) => x.id), [s.id]);
      assert.deepEqual((await sandboxes.list(team.id, { order: 'desc', limit: 10, states: ['running'] })).items, []);
      assert.deepEqual(await snapshots.garbage(Date.now()), [], 'a paused sandbox refers to its snapshot');

      // another sandbox takes the only slot: the resume is refused by the limit and nothing changes
      const other = sandbox(team.id, clusterId);
      await sandboxes.reserve(other, 1);
      await assert.rejects(sandboxes.beginResume(team.id, s.id, 1, Date.now()), SandboxLimitReached);
      assert.equal((await sandboxes.get(s.id))?.state, 'paused');
      await sandboxes.markKilled(other.id, 'x', Date.now());

      const raced = await Promise.all([1, 2, 3].map(() => sandboxes.beginResume(team.id, s.id, 5, Date.now())));
      assert.deepEqual(raced.sort(), ['not-paused', 'not-paused', 'resuming'], 'exactly one resume wins');
      assert.equal(await sandboxes.abortResume(s.id, Date.now()), true);
      assert.equal(await sandboxes.beginResume(team.id, s.id, 5, Date.now()), 'resuming');
      const t = Date.now();
      assert.equal(await sandboxes.finishResume(s.id, { nodeId: 'n2', envdVersion: '0.6.5', startedAt: t, endAt: t + 1000 }, t), true);
      const back = (await sandboxes.get(s.id))!;
      assert.deepEqual([back.state, back.nodeId, back.pauseSnapshotId, back.endAt], ['running', 'n2', null, t + 1000]);
      assert.deepEqual((await snapshots.garbage(Date.now())).map((x) => x.id), ['p1'], 'the old pause snapshot is garbage now');
      await snapshots.remove(['p1']);

      // a refused pause rolls back; a paused sandbox is killed only from paused
      assert.equal(await sandboxes.beginPause(s.id, 'p3', false, Date.now()), true);
      assert.equal(await sandboxes.abortPause(s.id, 'p3', Date.now()), true);
      assert.equal((await sandboxes.get(s.id))?.state, 'running');
      assert.equal(await sandboxes.markKilled(s.id, 'k', Date.now(), ['paused']), false);
      assert.equal(await sandboxes.markKilled(s.id, 'k', Date.now()), true);
    });

    test('persistent snapshots: lookup by id or name is per team, newest first, paged', async () => {
      const snapshots = new SnapshotStore(db.kysely, db.kind);
      const a = await teams.create({ name: 'snap-a', clusterId, maxConcurrentSandboxes: 5, maxTimeoutHours: 1 });
      const b = await teams.create({ name: 'snap-b', clusterId, maxConcurrentSandboxes: 5, maxTimeoutHours: 1 });
      const base = Date.now();
      const mk = async (id: string, teamId: string, name: string | null, at: number, status: 'ready' | 'creating' = 'ready') =>
        snapshots.insert({
          id, teamId, clusterId, kind: 'persistent', status, sandboxId: 'isrc', templateId: 'base', alias: 'base', buildId: 'b1', nodeBuildId: '',
          envdVersion: '0.6.4', cpuCount: 2, memoryMb: 512, diskMb: 1024, memory: true, name, sizeBytes: 1, nodeId: 'n1', createdAt: at,
        });
      await mk('sa1', a.id, 'named', base);
      await mk('sa2', a.id, 'named', base + 1);
      await mk('sa3', a.id, null, base + 2);
      await mk('sa4', a.id, 'named', base + 3, 'creating');
      await mk('sb1', b.id, 'named', base + 4);
      assert.deepEqual((await snapshots.findPersistent(a.id, clusterId, 'named')).map((x) => x.id), ['sa2', 'sa1']);
      assert.deepEqual((await snapshots.findPersistent(a.id, clusterId, 'sa1')).map((x) => x.id), ['sa1']);
      assert.deepEqual(await snapshots.findPersistent(a.id, clusterId, 'sb1'), [], "another team's snapshot is never found");
      const p1 = await snapshots.listPersistent(a.id, clusterId, { limit: 2 });
      assert.deepEqual([p1.items.map((x) => x.id), p1.more], [['sa3', 'sa2'], true]);
      const last = p1.items[1]!;
      const p2 = await snapshots.listPersistent(a.id, clusterId, { limit: 2, cursor: { createdAt: last.createdAt, id: last.id } });
      assert.deepEqual([p2.items.map((x) => x.id), p2.more], [['sa1'], false]);
      assert.deepEqual((await snapshots.garbage(base + 10)).map((x) => x.id), ['sa4'], 'a snapshot never confirmed is garbage once stale');
      assert.deepEqual(await snapshots.garbage(base), []);
    });

    test('times round-trip as numbers (bigint columns)', async () => {
      const r = await sql<{ v: number }>`select ${Date.now()} as v`.execute(db.kysely);
      assert.equal(r.rows.length, 1);
      const team = await teams.create({ name: 'times', clusterId, maxConcurrentSandboxes: 5, maxTimeoutHours: 1 });
      const s = sandbox(team.id, clusterId, { endAt: 1_900_000_000_123 });
      await sandboxes.reserve(s, 5);
      const back = await sandboxes.get(s.id);
      assert.equal(back?.endAt, 1_900_000_000_123);
      assert.equal(typeof back?.startedAt, 'number');
    });
  });
}
