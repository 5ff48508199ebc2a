// Fork (`POST /sandboxes/{id}/fork`, docs/pause-resume.md "Fork") through real HTTP into the control plane and real
// gRPC out of it to the wire-level cluster fixture, and through the unchanged SDK's `Sandbox.fork`: one checkpoint
// on the origin node, copies spread over the nodes with their own ids and tokens, the fork snapshot deleted after;
// per-copy errors (SDK `Error` entries); count and team limits refused before anything happens; unknown, killed,
// another team's and paused sources; a refused checkpoint leaves nothing; the reconciler deletes an interrupted
// fork's snapshot. Both store engines.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Code } from '@connectrpc/connect';
import { SnapshotCommit } from '@cove/contracts/orchestrator';
import { RateLimitError, Sandbox, SandboxError, SandboxNotFoundError } from 'e2b';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster, type FakeNode } from './fixtures/fake-cluster.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';

interface ForkEntry {
  sandbox?: { sandboxID: string; envdAccessToken: string; trafficAccessToken: string | null; domain: string };
  error?: { code: number; message: string; error_code?: string };
}

for (const engine of ['sqlite', 'postgres'] as const)
describe(`fork (${engine} store)`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  let dir: string;
  let pgServer: ThrowawayPostgres | undefined;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let a: FakeNode;
  let b: FakeNode;
  let key: string;
  let otherKey: string;
  let smallKey: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-fork-'));
    if (engine === 'postgres') pgServer = await startPostgres();
    cluster = await startFakeCluster();
    a = cluster.addNode('node-a');
    b = cluster.addNode('node-b');
    cp = await startControlPlane({ COVE_DB_URL: pgServer ? pgServer.url : join(dir, 'cp.db'), COVE_TRANSITION_WAIT_MS: '1500' }, dir);
    ({ key } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
    ({ key: otherKey } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'other' }));
    ({ key: smallKey } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'small', maxConcurrentSandboxes: 3 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    pgServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const createOn = async (node: FakeNode, body: Record<string, unknown> = {}, k = key) => {
    const other = node === a ? b : a;
    other.failCreateWith = Code.ResourceExhausted;
    try {
      const r = await call(cp.url, 'POST', '/v2/sandboxes', { key: k, body: { templateID: 'base', timeout: 600, ...body } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body as { sandboxID: string; envdAccessToken: string; trafficAccessToken: string | null };
    } finally {
      other.failCreateWith = undefined;
    }
  };
  const fork = (id: string, body: unknown, k = key) => call(cp.url, 'POST', `/sandboxes/${id}/fork`, { key: k, body });
  const callsFor = (method: string, id: string) => cluster.calls.filter((c) => c.method === method && c.sandboxId === id);
  const live = async (k = key) => (await call(cp.url, 'GET', '/v2/sandboxes', { key: k })).body.map((x: { sandboxID: string }) => x.sandboxID).sort();

  test('count 3: one checkpoint on the origin, copies spread over both nodes with their own ids and tokens, the fork snapshot deleted after', async () => {
    const src = await createOn(b, { metadata: { suite: 'fork' }, network: { allowPublicTraffic: false } });
    const mark = cluster.calls.length;
    const r = await fork(src.sandboxID, { count: 3, timeout: 120 });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const entries = r.body as ForkEntry[];
    assert.equal(entries.length, 3);
    const copies = entries.map((e) => e.sandbox!);
    assert.ok(copies.every(Boolean), JSON.stringify(entries));

    // (Snapshot goes to the node without cove-sandbox-id: the edge keeps the source's route.)
    const snaps = cluster.calls.slice(mark).filter((c) => c.method === 'Snapshot');
    // Copies spread over both nodes: committed before any of them starts.
    assert.deepEqual(snaps.map((c) => [c.nodeId, c.commit]), [['node-b', SnapshotCommit.NOW]], 'one checkpoint for all copies');
    const snapshotId = snaps[0]!.snapshotId!;
    assert.ok(b.sandboxes.has(src.sandboxID), 'the source runs on');

    const ids = new Set([src.sandboxID, ...copies.map((c) => c.sandboxID)]);
    assert.equal(ids.size, 4);
    const envd = new Set([src.envdAccessToken, ...copies.map((c) => c.envdAccessToken)]);
    assert.equal(envd.size, 4, 'each copy has its own envd token');
    const traffic = new Set([src.trafficAccessToken, ...copies.map((c) => c.trafficAccessToken)]);
    assert.ok(!traffic.has(null), 'a private source makes private copies');
    assert.equal(traffic.size, 4, 'each copy has its own traffic token');

    const creates = copies.map((c) => callsFor('Create', c.sandboxID).at(-1)!);
    assert.deepEqual(creates.map((c) => c.snapshotId), [snapshotId, snapshotId, snapshotId]);
    assert.deepEqual(creates.map((c) => c.nodeId), ['node-b', 'node-a', 'node-b'], 'the origin first, then spread');
    assert.deepEqual(creates.map((c) => c.trafficToken), copies.map((c) => c.trafficAccessToken), 'the edge learns each copy\'s own traffic token');
    for (const c of copies) {
      const info = await call(cp.url, 'GET', `/sandboxes/${c.sandboxID}`, { key });
      assert.equal(info.body.state, 'running');
      assert.deepEqual(info.body.metadata, { suite: 'fork' });
      const end = Date.parse(info.body.endAt);
      assert.ok(end > Date.now() + 100_000 && end <= Date.now() + 120_000, 'its own timeout, from its start');
    }

    await cp.cp.service.drain();
    assert.ok(cluster.calls.some((c) => c.method === 'DeleteSnapshots' && c.snapshotIds?.includes(snapshotId)), 'the fork snapshot is deleted');
    assert.ok(!cluster.storedSnapshots.has(snapshotId));
    assert.equal(await cp.cp.snapshotStore.get(snapshotId), undefined);
    assert.deepEqual((await call(cp.url, 'GET', `/snapshots?sandboxID=${src.sandboxID}`, { key })).body, [], 'never listed as a snapshot');
    assert.equal((await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: snapshotId } })).status, 404, 'not a template');
  });

  test('a copy placed on the origin defers the commit: never made when it starts there, asked for when it must move', async () => {
    const src = await createOn(a);
    const commits = (from: number) => cluster.calls.slice(from).filter((c) => c.method === 'Snapshot').map((c) => c.commit);
    const nodeOfCopy = (r: { body: unknown }) => callsFor('Create', (r.body as ForkEntry[])[0]!.sandbox!.sandboxID).at(-1)!.nodeId;
    let mark = cluster.calls.length;
    const one = await fork(src.sandboxID, { count: 1 });
    assert.equal(one.status, 201, JSON.stringify(one.body));
    assert.equal(nodeOfCopy(one), 'node-a');
    assert.deepEqual(commits(mark), [SnapshotCommit.DEFERRED], 'its copy started on the origin: nothing uploaded');

    // The origin turns it away: the copy moves to the other node, which gets the commit first.
    mark = cluster.calls.length;
    a.failCreateWith = Code.ResourceExhausted;
    try {
      const moved = await fork(src.sandboxID, { count: 1 });
      assert.equal(moved.status, 201, JSON.stringify(moved.body));
      assert.equal(nodeOfCopy(moved), 'node-b');
      assert.deepEqual(commits(mark), [SnapshotCommit.DEFERRED, SnapshotCommit.PENDING]);
      const pending = cluster.calls.slice(mark).find((c) => c.commit === SnapshotCommit.PENDING)!;
      assert.equal(pending.nodeId, 'node-a', 'asked of the origin');
      assert.ok(cluster.calls.indexOf(pending) < cluster.calls.indexOf(cluster.calls.slice(mark).find((c) => c.method === 'Create' && c.nodeId === 'node-b')!));

      // And when the origin cannot commit it either (storage down, or it lost the snapshot in a restart), the copy
      // is an error entry and its reservation goes; the source runs on.
      const before = (await live()).length;
      a.failCommitWith = Code.NotFound;
      const failed = await fork(src.sandboxID, { count: 1 });
      assert.equal(failed.status, 201, JSON.stringify(failed.body));
      assert.equal((failed.body as ForkEntry[])[0]!.sandbox, undefined, JSON.stringify(failed.body));
      assert.equal((await live()).length, before);
      assert.ok(a.sandboxes.has(src.sandboxID));
    } finally {
      a.failCreateWith = undefined;
      a.failCommitWith = undefined;
    }
  });

  test('a copy that fails (a corrupt artifact on the other node) is an error entry; the others run; the SDK returns Error entries', async () => {
    const src = await createOn(a);
    const before = (await live()).length;
    b.failCreateWith = Code.DataLoss;
    try {
      const r = await fork(src.sandboxID, { count: 3 });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const entries = r.body as ForkEntry[];
      assert.ok(entries[0]!.sandbox && entries[2]!.sandbox, JSON.stringify(entries));
      assert.equal(entries[1]!.sandbox, undefined);
      assert.equal(entries[1]!.error!.code, 500);
      assert.equal(entries[1]!.error!.error_code, 'snapshot_corrupt');
      assert.match(entries[1]!.error!.message, /corrupt/);
      // The failed copy left nothing: not listed, not counted.
      assert.equal((await live()).length, before + 2);

      // The unchanged SDK: one entry per copy, a Sandbox or an Error.
      process.env.E2B_API_URL = cp.url;
      process.env.E2B_API_KEY = key;
      const viaSdk = await Sandbox.fork(src.sandboxID, { count: 2, timeoutMs: 60_000 });
      assert.equal(viaSdk.length, 2);
      assert.ok(viaSdk[0] instanceof Sandbox);
      assert.ok(viaSdk[1] instanceof SandboxError && !(viaSdk[1] instanceof Sandbox), String(viaSdk[1]));
      assert.match((viaSdk[1] as Error).message, /^500: .*corrupt/);
      assert.equal((await live()).length, before + 3);
    } finally {
      b.failCreateWith = undefined;
      delete process.env.E2B_API_URL;
      delete process.env.E2B_API_KEY;
    }
  });

  test('the team limit: a fork the team has no room for is 429 before any checkpoint; one that fits runs', async () => {
    const src = await createOn(a, {}, smallKey);
    const snapsBefore = cluster.calls.filter((c) => c.method === 'Snapshot').length;
    const r = await fork(src.sandboxID, { count: 3 }, smallKey);
    assert.equal(r.status, 429, JSON.stringify(r.body));
    assert.equal(r.body.code, 429);
    assert.match(r.body.message, /maximum number of concurrent E2B sandboxes \(3\)/);
    assert.equal(cluster.calls.filter((c) => c.method === 'Snapshot').length, snapsBefore, 'no checkpoint');
    assert.deepEqual(await live(smallKey), [src.sandboxID], 'nothing reserved');
    // The unchanged SDK raises its RateLimitError for it.
    process.env.E2B_API_URL = cp.url;
    try {
      await assert.rejects(Sandbox.fork(src.sandboxID, { count: 3, apiKey: smallKey }), RateLimitError);
    } finally {
      delete process.env.E2B_API_URL;
    }
    const ok = await fork(src.sandboxID, { count: 2 }, smallKey);
    assert.equal(ok.status, 201);
    assert.ok((ok.body as ForkEntry[]).every((e) => e.sandbox));
    assert.equal((await live(smallKey)).length, 3);
    assert.equal((await fork(src.sandboxID, {}, smallKey)).status, 429);
  });

  test('bad input → 400; unknown, killed and other teams\' → 404; paused → 409; a refused checkpoint → 500 and nothing left', async () => {
    const src = await createOn(a, { metadata: { suite: 'fork-refused' } });
    for (const body of [{ count: 0 }, { count: 21 }, { count: 2.5 }, { count: '2' }, { timeout: -1 }, { timeout: 7200 }, [1]]) {
      const r = await fork(src.sandboxID, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.code, 400);
      assert.equal(typeof r.body.message, 'string');
    }
    assert.match((await fork(src.sandboxID, { count: 21 })).body.message, /count must be at most 20/);
    assert.equal((await fork('iunknown0000000000000', { count: 1 })).status, 404);
    assert.equal((await fork(src.sandboxID, { count: 1 }, otherKey)).status, 404);
    a.failPauseWith = Code.FailedPrecondition;
    try {
      const refused = await fork(src.sandboxID, { count: 2 });
      assert.equal(refused.status, 500);
      assert.match(refused.body.message, /could not be forked.*keeps running/);
    } finally {
      a.failPauseWith = undefined;
    }
    const q = `metadata=${encodeURIComponent('suite=fork-refused')}`;
    assert.deepEqual((await call(cp.url, 'GET', `/v2/sandboxes?${q}`, { key })).body.map((x: { sandboxID: string }) => x.sandboxID), [src.sandboxID], 'nothing reserved');
    assert.equal((await call(cp.url, 'POST', `/sandboxes/${src.sandboxID}/pause`, { key })).status, 204);
    const paused = await fork(src.sandboxID, { count: 1 });
    assert.equal(paused.status, 409);
    assert.match(paused.body.message, /paused/);
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${src.sandboxID}`, { key })).status, 204);
    assert.equal((await fork(src.sandboxID, { count: 1 })).status, 404);

    process.env.E2B_API_URL = cp.url;
    process.env.E2B_API_KEY = key;
    try {
      await assert.rejects(Sandbox.fork(src.sandboxID, { count: 1 }), SandboxNotFoundError);
    } finally {
      delete process.env.E2B_API_URL;
      delete process.env.E2B_API_KEY;
    }
  });

  test('an interrupted fork\'s snapshot (its answer lost) is deleted by the reconciler once stale', async () => {
    const src = await createOn(a);
    const mark = cluster.calls.length;
    a.failPauseWith = Code.Unavailable;
    let r;
    try {
      r = await fork(src.sandboxID, { count: 1 });
    } finally {
      a.failPauseWith = undefined;
    }
    assert.equal(r.status, 502, JSON.stringify(r.body));
    const snapshotId = cluster.calls.slice(mark).filter((c) => c.method === 'Snapshot').at(-1)!.snapshotId!;
    const row = await cp.cp.snapshotStore.get(snapshotId);
    assert.equal(row?.kind, 'fork', 'the row stays until the reconciler settles it');
    // Stale: older than the reconciler's threshold.
    await cp.cp.db.kysely.updateTable('snapshots').set({ created_at: Date.now() - 3_600_000 }).where('id', '=', snapshotId).execute();
    cluster.storedSnapshots.set(snapshotId, { snapshotId, sandboxId: src.sandboxID, memory: true, templateId: 'base', buildId: '', persistent: true });
    await cp.cp.reconciler.runOnce();
    assert.equal(await cp.cp.snapshotStore.get(snapshotId), undefined);
    assert.ok(!cluster.storedSnapshots.has(snapshotId));
  });
});
