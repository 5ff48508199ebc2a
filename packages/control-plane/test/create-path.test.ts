// The create path's speed-ups must not weaken it (docs/performance.md, "Control plane: creates/s"): prepared
// queries bind what a tenant sends as values whatever it looks like, parallel creates still cannot overshoot the
// team's limit, a deleted API key stops working on the next request (no key cache), and the statement cache
// stays correct past its size and across a schema change. Real HTTP against a real control plane and SQLite.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { withStatementCache } from '../src/store/database.js';
import { PreparedQuery } from '../src/store/prepared.js';
import type { Database } from '../src/store/schema.js';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

/** prepared.ts's stand-in prefix: a tenant's value spelling it must still be bound as that very value. */
const STAND_IN = '\u0000cove-prepared-argument:';

describe('create path', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;

  before(async () => {
    cluster = await startFakeCluster();
    cluster.addNode('node-a', { cpuCount: 64, memoryBytes: 256n << 30n });
    cp = await startControlPlane();
    ({ key } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
  });

  test('values spelling a prepared query stand-in are stored and looked up as they are, end to end', async () => {
    const metadata = { a: `${STAND_IN}0`, b: `${STAND_IN}1`, [`${STAND_IN}2`]: "x' or 1=1 --" };
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60, metadata, envVars: { E: `${STAND_IN}0` } } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const got = await call(cp.url, 'GET', `/sandboxes/${r.body.sandboxID}`, { key });
    assert.equal(got.status, 200);
    assert.deepEqual(got.body.metadata, metadata);
    assert.equal(got.body.templateID, r.body.templateID);
    // A template reference spelling a stand-in (the first argument of the template and snapshot lookups) is a
    // name nobody has, not the cluster or team id that argument carries.
    for (const ref of [`${STAND_IN}0`, `${STAND_IN}1`, `${STAND_IN}2`]) {
      const miss = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: ref } });
      assert.equal(miss.status, 404, JSON.stringify(miss.body));
    }
  });

  test('parallel creates cannot overshoot the team limit', async () => {
    const small = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'small', maxConcurrentSandboxes: 3 });
    const answers = await Promise.all(Array.from({ length: 12 }, () => call(cp.url, 'POST', '/v2/sandboxes', { key: small.key, body: { templateID: 'base' } })));
    assert.equal(answers.filter((a) => a.status === 201).length, 3);
    const refused = answers.filter((a) => a.status !== 201);
    assert.equal(refused.length, 9);
    for (const a of refused) {
      assert.equal(a.status, 429);
      assert.equal(a.body.code, 429);
      assert.match(a.body.message, /maximum number of concurrent E2B sandboxes \(3\)/);
    }
    const listed = await call(cp.url, 'GET', '/v2/sandboxes', { key: small.key });
    assert.equal(listed.body.length, 3);
  });

  test('a deleted API key is refused on the very next request', async () => {
    const minted = await call(cp.url, 'POST', '/api-keys', { key, body: { name: 'short-lived' } });
    assert.equal(minted.status, 201);
    const other: string = minted.body.key;
    // Warm every path a cache could sit on, then revoke and try at once.
    for (let i = 0; i < 3; i++) assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: other })).status, 200);
    assert.equal((await call(cp.url, 'DELETE', `/api-keys/${minted.body.id}`, { key })).status, 204);
    const after = await call(cp.url, 'POST', '/v2/sandboxes', { key: other, body: { templateID: 'base' } });
    assert.equal(after.status, 401);
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: other })).status, 401);
  });
});

describe('store statements', () => {
  let dir: string;
  let raw: SqliteDatabase.Database;
  let db: Kysely<Database>;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-stmt-'));
    raw = new SqliteDatabase(join(dir, 'db.sqlite'));
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(raw, 4) }) });
  });

  after(async () => {
    await db.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the statement cache stays correct past its size and across a schema change', async () => {
    await sql`create table t (a integer)`.execute(db);
    for (let i = 0; i < 10; i++) await sql`insert into t (a) values (${i})`.execute(db);
    // More distinct statements than the cache holds, each twice: evicted ones are prepared again.
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 10; i++) {
        const r = await sql<{ n: number }>`select count(*) as n from t where a >= ${sql.lit(i)}`.execute(db);
        assert.equal(r.rows[0]!.n, 10 - i);
      }
    }
    const all = sql<Record<string, unknown>>`select * from t where a = 0`;
    assert.deepEqual((await all.execute(db)).rows, [{ a: 0 }]);
    await sql`alter table t add column b integer default 7`.execute(db);
    assert.deepEqual((await all.execute(db)).rows, [{ a: 0, b: 7 }]);
  });

  test('a prepared query refuses an argument it would inline or drop', () => {
    assert.throws(() => new PreparedQuery(db, 1, (d, a: string) => d.selectFrom('teams').selectAll().where('id', '=', sql.lit(a))), /inlined/);
    assert.throws(() => new PreparedQuery(db, 2, (d, a: string) => d.selectFrom('teams').selectAll().where('id', '=', a)), /argument 1 is not a parameter/);
  });

  test('a prepared query runs with each call’s values, constants kept', async () => {
    await sql`create table kv (k text, v text, kind text)`.execute(db);
    // Were values ever matched against the stand-ins, the first row's v would come back as 'one'.
    const kv = db as unknown as Kysely<{ kv: { k: string; v: string; kind: string } }>;
    const put = new PreparedQuery(kv, 2, (d, k: string, v: string) => d.insertInto('kv').values({ k, v, kind: 'fixed' }));
    await put.execute(kv, 'one', `${STAND_IN}0`);
    await put.execute(kv, `${STAND_IN}1`, 'two');
    const rows = (await sql<{ k: string; v: string; kind: string }>`select k, v, kind from kv order by rowid`.execute(db)).rows;
    assert.deepEqual(rows, [
      { k: 'one', v: `${STAND_IN}0`, kind: 'fixed' },
      { k: `${STAND_IN}1`, v: 'two', kind: 'fixed' },
    ]);
  });
});
