// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
// Pause, resume and snapshots (docs/pause-resume.md) through real HTTP into the control plane and real gRPC out of
// it, to the wire-level cluster fixture (which keeps "cluster storage" as plain data): pause/409, connect resuming
// with origin-node preference and fallback, cold resumes, exactly-one resume under concurrency, missing and corrupt
// snapshots, kill of paused sandboxes, auto-pause at the end time, the edge's auto-resume endpoint, persistent
// snapshots, interrupted transitions settled by the reconciler, and bad input. Both store engines.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { create as createMessage } from '@bufbuild/protobuf';
import { timestampFromMs, timestampNow } from '@bufbuild/protobuf/wkt';
import { Code } from '@connectrpc/connect';
import { SandboxInfoSchema } from '@cove/contracts/orchestrator';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster, type FakeNode } from './fixtures/fake-cluster.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';

const ids = (xs: Array<{ sandboxID: string }>) => xs.map((x) => x.sandboxID);

for (const engine of ['sqlite', 'postgres'] as const)
describe(`pause, resume and snapshots (${engine} store)`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  let dir: string;
  let pgServer: ThrowawayPostgres | undefined;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let otherCluster: FakeCluster;
  let a: FakeNode;
  let b: FakeNode;
  let key: string;
  let otherKey: string;
  let otherClusterKey: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-pause-'));
    if (engine === 'postgres') pgServer = await startPostgres();
    cluster = await startFakeCluster();
    otherCluster = await startFakeCluster('other-cluster-token-0123456789');
    a = cluster.addNode('node-a');
    b = cluster.addNode('node-b');
    otherCluster.addNode('node-x');
    cp = await startControlPlane({ COVE_DB_URL: pgServer ? pgServer.url : join(dir, 'cp.db'), COVE_TRANSITION_WAIT_MS: '1500' }, dir);
    ({ key } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
    ({ key: otherKey } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'other' }));
    ({ key: otherClusterKey } = await setupTeam(cp.url, otherCluster.endpoint, otherCluster.token, { name: 'elsewhere' }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    await otherCluster.close();
    pgServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const create = async (body: Record<string, unknown> = {}, k = key) => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key: k, body: { templateID: 'base', timeout: 600, ...body } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body as { sandboxID: string; envdAccessToken: string; trafficAccessToken: string | null };
  };
  /** A sandbox created on `node` (the other node refuses creates meanwhile). */
  const createOn = async (node: FakeNode, body: Record<string, unknown> = {}) => {
    const other = node === a ? b : a;
    other.failCreateWith = Code.ResourceExhausted;
    try {
      return await create(body);
    } finally {
      other.failCreateWith = undefined;
    }
  };
  const pause = (id: string, body?: unknown, k = key) => call(cp.url, 'POST', `/sandboxes/${id}/pause`, { key: k, body });
  const connect = (id: string, body: unknown = { timeout: 120 }, k = key) => call(cp.url, 'POST', `/v2/sandboxes/${id}/connect`, { key: k, body });
  const info = (id: string, k = key) => call(cp.url, 'GET', `/sandboxes/${id}`, { key: k });
  const callsFor = (method: string, id: string) => cluster.calls.filter((c) => c.method === method && c.sandboxId === id);
  const pauseSnapshot = async (id: string) => (await cp.cp.sandboxes.get(id))!.pauseSnapshotId!;
  const autoResume = (id: string, body: unknown, token: string | null = cluster.token) =>
    call(cp.url, 'POST', `/cluster/v1/sandboxes/${id}/resume`, { body, headers: token === null ? {} : { authorization: `Bearer ${token}` } });

  test('pause → 204 and the sandbox shows paused; a second pause → 409 (the SDK returns false)', async () => {
    const s = await create({ metadata: { suite: 'pause' } });
    const r = await pause(s.sandboxID);
    assert.equal(r.status, 204, JSON.stringify(r.body));
    const [p] = callsFor('Pause', s.sandboxID);
    assert.ok(p, 'Pause reached the node with cove-sandbox-id');
    assert.equal(p.nodeId, 'node-a');
    assert.equal(p.memory, true);
    assert.match(p.snapshotId!, new RegExp(`^${s.sandboxID}-p[a-z0-9]{10}$`));
    assert.ok(cluster.storedSnapshots.has(p.snapshotId!));
    assert.ok(!a.sandboxes.has(s.sandboxID));

    const d = await info(s.sandboxID);
    assert.equal(d.status, 200);
    assert.equal(d.body.state, 'paused');
    assert.deepEqual(d.body.lifecycle, { autoResume: false, onTimeout: 'kill' });

    const again = await pause(s.sandboxID);
    assert.equal(again.status, 409);
    assert.equal(again.body.code, 409);
    assert.match(again.body.message, /already paused/);
    assert.equal(callsFor('Pause', s.sandboxID).length, 1);

    // timeouts and refreshes are for running sandboxes only (404, as E2B)
    assert.equal((await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/timeout`, { key, body: { timeout: 30 } })).status, 404);
    assert.equal((await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/refreshes`, { key, body: { duration: 30 } })).status, 404);

    const q = `metadata=${encodeURIComponent('suite=pause')}`;
    assert.deepEqual(ids((await call(cp.url, 'GET', `/v2/sandboxes?${q}&state=paused`, { key })).body), [s.sandboxID]);
    assert.deepEqual(ids((await call(cp.url, 'GET', `/v2/sandboxes?${q}&state=running`, { key })).body), []);
    const both = await call(cp.url, 'GET', `/v2/sandboxes?${q}`, { key });
    assert.deepEqual(both.body.map((x: { state: string }) => x.state), ['paused']);
    assert.deepEqual((await call(cp.url, 'GET', `/sandboxes?${q}`, { key })).body, [], 'v1 lists running sandboxes only');
    assert.deepEqual((await call(cp.url, 'GET', `/v2/sandboxes?state=paused`, { key: otherKey })).body, []);
  });

  test('pause with memory:false writes a filesystem-only snapshot', async () => {
    const s = await create();
    assert.equal((await pause(s.sandboxID, { memory: false })).status, 204);
    assert.equal(callsFor('Pause', s.sandboxID)[0]?.memory, false);
    assert.equal((await cp.cp.sandboxes.get(s.sandboxID))?.pauseMemory, false);
  });

  test('pause of an unknown, killed or other team’s sandbox → 404', async () => {
    const s = await create();
    assert.equal((await pause(s.sandboxID, undefined, otherKey)).status, 404);
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${s.sandboxID}`, { key })).status, 204);
    const killed = await pause(s.sandboxID);
    assert.equal(killed.status, 404);
    assert.equal(killed.body.code, 404);
    assert.equal((await pause('iunknown0000000000000')).status, 404);
  });

  test('a node that refuses to checkpoint → 500 naming it; the sandbox keeps running', async () => {
    const s = await createOn(a);
    a.failPauseWith = Code.FailedPrecondition;
    try {
      const r = await pause(s.sandboxID);
      assert.equal(r.status, 500);
      assert.match(r.body.message, /could not be paused: cannot checkpoint; it keeps running/);
    } finally {
      a.failPauseWith = undefined;
    }
    assert.equal((await info(s.sandboxID)).body.state, 'running');
    assert.equal((await pause(s.sandboxID)).status, 204);
  });

  test('connect resumes a paused sandbox (201) on the node that paused it, from its snapshot, with the same tokens', async () => {
    const s = await createOn(b, { network: { allowPublicTraffic: false } });
    assert.equal((await pause(s.sandboxID)).status, 204);
    const snap = await pauseSnapshot(s.sandboxID);
    const r = await connect(s.sandboxID, { timeout: 200 });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.sandboxID, s.sandboxID);
    assert.equal(r.body.envdAccessToken, s.envdAccessToken);
    assert.equal(r.body.trafficAccessToken, s.trafficAccessToken);
    const creates = callsFor('Create', s.sandboxID).filter((c) => c.snapshotId);
    assert.equal(creates.length, 1);
    const resume = creates[0]!;
    assert.equal(resume.nodeId, 'node-b', 'the origin node first although node-a ranks better');
    assert.equal(resume.snapshotId, snap);
    assert.equal(resume.cold, false);
    assert.equal(resume.templateId, 'base');
    assert.equal(resume.buildId, '');
    assert.equal(resume.envdAccessToken, s.envdAccessToken);
    assert.equal(resume.trafficToken, s.trafficAccessToken, 'the traffic token goes to the edge as on create');
    assert.ok(b.sandboxes.has(s.sandboxID));
    const d = await info(s.sandboxID);
    assert.equal(d.body.state, 'running');
    assert.equal(Date.parse(d.body.endAt) - Date.parse(d.body.startedAt), 200_000);

    // the pause snapshot is deleted once the sandbox runs again (in the background)
    await cp.cp.service.drain();
    assert.ok(cluster.calls.some((c) => c.method === 'DeleteSnapshots' && c.snapshotIds?.includes(snap) && c.nodeId === 'node-b'));
    assert.ok(!cluster.storedSnapshots.has(snap));
    assert.equal(await cp.cp.snapshotStore.get(snap), undefined);

    // running: connect only extends (200), no Create
    const again = await connect(s.sandboxID, { timeout: 300 });
    assert.equal(again.status, 200);
    assert.equal(callsFor('Create', s.sandboxID).filter((c) => c.snapshotId).length, 1);
  });

  test('resume falls back to another node when the origin node is gone', async () => {
    const s = await createOn(b);
    assert.equal((await pause(s.sandboxID)).status, 204);
    cluster.nodes.delete('node-b');
    try {
      const r = await connect(s.sandboxID);
      assert.equal(r.status, 201);
      assert.equal(callsFor('Create', s.sandboxID).at(-1)?.nodeId, 'node-a');
      assert.ok(a.sandboxes.has(s.sandboxID));
    } finally {
      cluster.nodes.set('node-b', b);
    }
  });

  test('connect {memory:false} resumes cold; the deprecated /resume does the same', async () => {
    const s = await create();
    assert.equal((await pause(s.sandboxID)).status, 204);
    assert.equal((await connect(s.sandboxID, { memory: false })).status, 201);
    assert.equal(callsFor('Create', s.sandboxID).at(-1)?.cold, true);

    assert.equal((await pause(s.sandboxID)).status, 204);
    const r = await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/resume`, { key, body: { timeout: 60 } });
    assert.equal(r.status, 201);
    assert.equal(callsFor('Create', s.sandboxID).at(-1)?.cold, false);
    const d = await info(s.sandboxID);
    assert.equal(Date.parse(d.body.endAt) - Date.parse(d.body.startedAt), 60_000);
    assert.equal((await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/resume`, { key })).status, 200, 'running: extend only');
  });

  test('two concurrent connects on a paused sandbox: one Create, one 201 and one 200', async () => {
    const s = await createOn(a);
    assert.equal((await pause(s.sandboxID)).status, 204);
    a.createDelayMs = 300;
    try {
      const rs = await Promise.all([connect(s.sandboxID), connect(s.sandboxID), call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/connect`, { key, body: { timeout: 30 } })]);
      assert.deepEqual(rs.map((r) => r.status).sort(), [200, 200, 201]);
      for (const r of rs) assert.equal(r.body.envdAccessToken, s.envdAccessToken);
    } finally {
      a.createDelayMs = undefined;
    }
    assert.equal(callsFor('Create', s.sandboxID).filter((c) => c.snapshotId).length, 1, 'exactly one resume');
  });

  test('a snapshot missing from storage → 410 naming it; a corrupt one → 500; the sandbox stays paused', async () => {
    const s = await create();
    assert.equal((await pause(s.sandboxID)).status, 204);
    const snap = await pauseSnapshot(s.sandboxID);
    const stored = cluster.storedSnapshots.get(snap)!;
    cluster.storedSnapshots.delete(snap);
    const missing = await connect(s.sandboxID);
    assert.equal(missing.status, 410);
    assert.equal(missing.body.code, 410);
    assert.equal(missing.body.message, `sandbox "${s.sandboxID}" stays paused: snapshot '${snap}' is missing from cluster storage`);
    assert.equal((await info(s.sandboxID)).body.state, 'paused');

    cluster.storedSnapshots.set(snap, { ...stored, corrupt: true });
    const corrupt = await connect(s.sandboxID);
    assert.equal(corrupt.status, 500);
    assert.match(corrupt.body.message, new RegExp(`snapshot '${snap}' is corrupt in cluster storage \\(.*digest mismatch\\)`));
    assert.equal(corrupt.body.error_code, 'snapshot_corrupt');
    assert.equal((await cp.cp.sandboxes.get(s.sandboxID))?.state, 'paused');

    cluster.storedSnapshots.set(snap, stored);
    assert.equal((await connect(s.sandboxID)).status, 201, 'once the snapshot is back it resumes');
  });

  test('a node that cannot restore the snapshot hands the resume to the next; when none can → 500 "could not be restored", paused', async () => {
    const s = await createOn(a);
    assert.equal((await pause(s.sandboxID)).status, 204);
    const snap = await pauseSnapshot(s.sandboxID);
    a.failRestore = true;
    try {
      const moved = await connect(s.sandboxID);
      assert.equal(moved.status, 201, JSON.stringify(moved.body));
      assert.deepEqual(callsFor('Create', s.sandboxID).filter((c) => c.snapshotId).map((c) => c.nodeId), ['node-a', 'node-b']);
      assert.ok(b.sandboxes.has(s.sandboxID));
      assert.equal(callsFor('Delete', s.sandboxID).length, 0, 'nothing deleted on the node that could not restore it');

      assert.equal((await pause(s.sandboxID)).status, 204);
      const again = await pauseSnapshot(s.sandboxID);
      b.failRestore = true;
      const failed = await connect(s.sandboxID);
      assert.equal(failed.status, 500);
      assert.equal(failed.body.code, 500);
      assert.match(failed.body.message, new RegExp(`snapshot '${again}' could not be restored on any node that tried \\(.*criu restore failed\\)`));
      assert.doesNotMatch(failed.body.message, /corrupt|storage/);
      assert.equal((await info(s.sandboxID)).body.state, 'paused');
      assert.notEqual(again, snap);
    } finally {
      a.failRestore = b.failRestore = false;
    }
    assert.equal((await connect(s.sandboxID)).status, 201, 'it resumes once a node can');
  });

  test('a resume over the team limit → 429 and it stays paused', async () => {
    const small = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'small', maxConcurrentSandboxes: 1 });
    const s = await create({}, small.key);
    assert.equal((await pause(s.sandboxID, undefined, small.key)).status, 204);
    const other = await create({}, small.key);
    const r = await connect(s.sandboxID, undefined, small.key);
    assert.equal(r.status, 429);
    assert.equal((await cp.cp.sandboxes.get(s.sandboxID))?.state, 'paused');
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${other.sandboxID}`, { key: small.key })).status, 204);
    assert.equal((await connect(s.sandboxID, undefined, small.key)).status, 201);
  });

  test('kill of a paused sandbox deletes its snapshot → 204, then it is gone', async () => {
    const s = await createOn(b);
    assert.equal((await pause(s.sandboxID)).status, 204);
    const snap = await pauseSnapshot(s.sandboxID);
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${s.sandboxID}`, { key: otherKey })).status, 404);
    const k = await call(cp.url, 'DELETE', `/sandboxes/${s.sandboxID}`, { key });
    assert.equal(k.status, 204);
    const del = cluster.calls.find((c) => c.method === 'DeleteSnapshots' && c.snapshotIds?.includes(snap));
    assert.equal(del?.nodeId, 'node-b', 'the node that paused it (it caches the snapshot)');
    assert.ok(!cluster.storedSnapshots.has(snap));
    assert.equal((await info(s.sandboxID)).status, 404);
    assert.equal((await connect(s.sandboxID)).status, 404);
    assert.equal((await cp.cp.sandboxes.get(s.sandboxID))?.state, 'killed');
  });

  test('a failed snapshot deletion does not fail the kill; the reconciler deletes it later', async () => {
    const s = await create();
    assert.equal((await pause(s.sandboxID)).status, 204);
    const snap = await pauseSnapshot(s.sandboxID);
    a.failDeleteSnapshotsWith = Code.Unavailable;
    b.failDeleteSnapshotsWith = Code.Unavailable;
    try {
      assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${s.sandboxID}`, { key })).status, 204);
      assert.ok(cluster.storedSnapshots.has(snap));
      await cp.cp.reconciler.runOnce();
      assert.ok(cluster.storedSnapshots.has(snap), 'still failing');
    } finally {
      a.failDeleteSnapshotsWith = undefined;
      b.failDeleteSnapshotsWith = undefined;
    }
    await cp.cp.reconciler.runOnce();
    assert.ok(!cluster.storedSnapshots.has(snap));
    assert.equal(await cp.cp.snapshotStore.get(snap), undefined);
  });

  test('lifecycle: autoPause pauses at the end time (memory per autoPauseMemory); getInfo shows it', async () => {
    const s = await createOn(a, { timeout: 1, autoPause: true, autoResume: { enabled: true } });
    assert.deepEqual((await info(s.sandboxID)).body.lifecycle, { autoResume: true, onTimeout: 'pause' });
    const endAt = (await cp.cp.sandboxes.get(s.sandboxID))!.endAt;
    assert.ok((await cp.cp.evictor.runOnce(endAt)).includes(s.sandboxID));
    assert.equal(callsFor('Pause', s.sandboxID)[0]?.memory, true);
    assert.equal(callsFor('Delete', s.sandboxID).length, 0, 'paused, not killed');
    assert.equal((await info(s.sandboxID)).body.state, 'paused');

    const fs = await createOn(a, { timeout: 1, autoPause: true, autoPauseMemory: false });
    const fsEnd = (await cp.cp.sandboxes.get(fs.sandboxID))!.endAt;
    await cp.cp.evictor.runOnce(fsEnd);
    assert.equal(callsFor('Pause', fs.sandboxID)[0]?.memory, false);
    assert.equal((await cp.cp.sandboxes.get(fs.sandboxID))?.state, 'paused');

    // a node that cannot checkpoint the memory: a filesystem-only pause instead
    const hard = await createOn(a, { timeout: 1, autoPause: true });
    a.refuseMemoryPause = true;
    try {
      await cp.cp.evictor.runOnce((await cp.cp.sandboxes.get(hard.sandboxID))!.endAt);
    } finally {
      a.refuseMemoryPause = undefined;
    }
    assert.deepEqual(callsFor('Pause', hard.sandboxID).map((c) => c.memory), [true, false]);
    const hardRow = (await cp.cp.sandboxes.get(hard.sandboxID))!;
    assert.deepEqual([hardRow.state, hardRow.pauseMemory], ['paused', false]);

    const plain = await createOn(a, { timeout: 1 });
    await cp.cp.evictor.runOnce((await cp.cp.sandboxes.get(plain.sandboxID))!.endAt);
    assert.equal(callsFor('Pause', plain.sandboxID).length, 0);
    assert.equal((await cp.cp.sandboxes.get(plain.sandboxID))?.state, 'killed');
  });

  test('lifecycle validation: autoPauseMemory=false needs autoPause and excludes autoResume → 400', async () => {
    for (const body of [
      { autoPauseMemory: false },
      { autoPause: true, autoPauseMemory: false, autoResume: { enabled: true } },
      { autoPause: 'yes' },
      { autoResume: true },
      { autoResume: { enabled: 'no' } },
    ]) {
      const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', ...body } });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.code, 400);
    }
  });

  test('an uncertain pause failure leaves it pausing; the reconciler repeats the Pause and settles it', async () => {
    // the node committed, but the answer was lost
    const s = await createOn(a);
    a.pauseCommitsThenFails = Code.Unavailable;
    const r = await pause(s.sandboxID);
    assert.equal(r.status, 502);
    assert.match(r.body.message, /did not complete; it is retried/);
    assert.equal((await cp.cp.sandboxes.get(s.sandboxID))?.state, 'pausing');
    // Until the pause is known done the API says running: traffic could reach it until the edge took its route.
    assert.equal((await info(s.sandboxID)).body.state, 'running', 'a pause not known done shows as running');
    const listed = async (state: string) => ids((await call(cp.url, 'GET', `/v2/sandboxes?state=${state}`, { key })).body);
    assert.ok((await listed('running')).includes(s.sandboxID), 'listed as running');
    assert.ok(!(await listed('paused')).includes(s.sandboxID), 'not listed as paused');
    assert.equal((await pause(s.sandboxID)).status, 409, 'not paused twice');
    await cp.cp.reconciler.runOnce();
    assert.equal(callsFor('Pause', s.sandboxID).length, 2);
    const [p1, p2] = callsFor('Pause', s.sandboxID);
    assert.equal(p2!.snapshotId, p1!.snapshotId, 'the same Pause again (idempotent on the node)');
    assert.equal((await cp.cp.sandboxes.get(s.sandboxID))?.state, 'paused');
    assert.equal((await connect(s.sandboxID)).status, 201);

    // the Pause never reached the node: the retry pauses it
    const t = await createOn(a);
    a.failPauseWith = Code.DeadlineExceeded;
    assert.equal((await pause(t.sandboxID)).status, 502);
    a.failPauseWith = undefined;
    await cp.cp.reconciler.runOnce();
    assert.equal((await cp.cp.sandboxes.get(t.sandboxID))?.state, 'paused');

    // neither the sandbox nor its snapshot: gone
    const u = await createOn(a);
    a.failPauseWith = Code.Unknown;
    assert.equal((await pause(u.sandboxID)).status, 502);
    a.failPauseWith = undefined;
    a.sandboxes.delete(u.sandboxID);
    await cp.cp.reconciler.runOnce();
    const gone = (await cp.cp.sandboxes.get(u.sandboxID))!;
    assert.deepEqual([gone.state, gone.endReason], ['killed', 'lost while pausing']);
  });

  test('a connect during an unsettled transition waits and answers 409 when it does not settle', async () => {
    const s = await createOn(a);
    a.failPauseWith = Code.Unavailable;
    assert.equal((await pause(s.sandboxID)).status, 502);
    a.failPauseWith = undefined;
    const started = Date.now();
    const r = await connect(s.sandboxID);
    assert.equal(r.status, 409);
    assert.match(r.body.message, /still pausing/);
    assert.ok(Date.now() - started >= 1000, 'it waited');
    // while it waits the reconciler settles it: the connect then resumes
    const waiting = connect(s.sandboxID);
    for (let i = 0; i < 10 && (await cp.cp.sandboxes.get(s.sandboxID))?.state === 'pausing'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      await cp.cp.reconciler.runOnce();
    }
    assert.equal((await waiting).status, 201);
  });

  test('an interrupted resume: running when a node runs it, paused again when none does', async () => {
    const team = (await cp.cp.teams.list()).find((t) => t.name === 'team')!;
    const s = await create();
    assert.equal((await pause(s.sandboxID)).status, 204);
    assert.equal(await cp.cp.sandboxes.beginResume(team.id, s.sandboxID, 50, Date.now()), 'resuming');
    assert.deepEqual(await cp.cp.reconciler.runOnce(), []);
    assert.equal((await cp.cp.sandboxes.get(s.sandboxID))?.state, 'resuming', 'young: its resume may be in flight');
    await cp.cp.reconciler.runOnce(Date.now() + 10 * 60_000);
    assert.equal((await cp.cp.sandboxes.get(s.sandboxID))?.state, 'paused');

    // the Create did happen before the control plane lost track
    const snap = await pauseSnapshot(s.sandboxID);
    assert.equal(await cp.cp.sandboxes.beginResume(team.id, s.sandboxID, 50, Date.now()), 'resuming');
    const resumed = await connect(s.sandboxID).catch(() => undefined);
    assert.equal(resumed?.status, 409, 'the row is resuming: connect waits, then 409');
    b.sandboxes.set(
      s.sandboxID,
      createMessage(SandboxInfoSchema, { sandboxId: s.sandboxID, templateId: 'base', envdVersion: '0.6.4', startTime: timestampNow(), endTime: timestampFromMs(Date.now() + 60_000) }),
    );
    await cp.cp.reconciler.runOnce(Date.now() + 10 * 60_000);
    const row = (await cp.cp.sandboxes.get(s.sandboxID))!;
    assert.deepEqual([row.state, row.nodeId, row.pauseSnapshotId], ['running', 'node-b', null]);
    assert.ok(!cluster.storedSnapshots.has(snap), 'its pause snapshot is deleted');
  });

  test('auto-resume endpoint: cluster-token auth, body checks, 404s, traffic tokens, wake-up', async () => {
    const s = await createOn(a, { autoPause: true, autoResume: { enabled: true } });
    const body = { port: 8080 };
    assert.equal((await autoResume(s.sandboxID, body, null)).status, 401);
    const wrong = await autoResume(s.sandboxID, body, 'not-the-cluster-token-000000');
    assert.equal(wrong.status, 403);
    assert.equal(wrong.body.code, 403);
    assert.equal((await call(cp.url, 'POST', `/cluster/v1/sandboxes/${s.sandboxID}/resume`, { key, body })).status, 401, 'an API key is not a cluster token');
    for (const bad of [{}, { port: '80' }, { port: 0 }, { port: 70000 }, { port: 80, trafficAccessToken: 5 }]) {
      const r = await autoResume(s.sandboxID, bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
      assert.equal(r.body.code, 400);
    }
    assert.equal((await autoResume('iunknown0000000000000', body)).status, 404);

    // running → answered at once
    const running = await autoResume(s.sandboxID, body);
    assert.deepEqual([running.status, running.body], [200, { sandboxID: s.sandboxID, nodeID: 'node-a' }]);
    // another cluster's token does not reach it
    assert.equal((await autoResume(s.sandboxID, body, otherCluster.token)).status, 404);

    // paused with autoResume → resumed for 5 minutes
    assert.equal((await pause(s.sandboxID)).status, 204);
    const woke = await autoResume(s.sandboxID, body);
    assert.equal(woke.status, 200, JSON.stringify(woke.body));
    assert.equal(woke.body.sandboxID, s.sandboxID);
    assert.ok(cluster.nodes.get(woke.body.nodeID)!.sandboxes.has(s.sandboxID));
    const d = await info(s.sandboxID);
    assert.equal(d.body.state, 'running');
    assert.equal(Date.parse(d.body.endAt) - Date.parse(d.body.startedAt), 300_000);

    // paused without autoResume, or paused without memory → 404
    const manual = await create();
    assert.equal((await pause(manual.sandboxID)).status, 204);
    assert.equal((await autoResume(manual.sandboxID, body)).status, 404);
    const fsOnly = await create({ autoResume: { enabled: true } });
    assert.equal((await pause(fsOnly.sandboxID, { memory: false })).status, 204);
    assert.equal((await autoResume(fsOnly.sandboxID, body)).status, 404);
    assert.equal((await cp.cp.sandboxes.get(fsOnly.sandboxID))?.state, 'paused');

    // private: the traffic token is needed, or envd's access token on envd's port — never the id alone
    const priv = await create({ autoResume: { enabled: true }, network: { allowPublicTraffic: false } });
    assert.equal((await pause(priv.sandboxID)).status, 204);
    assert.equal((await autoResume(priv.sandboxID, { port: 8080 })).status, 403);
    assert.equal((await autoResume(priv.sandboxID, { port: 8080, trafficAccessToken: 'f'.repeat(64) })).status, 403);
    assert.equal((await autoResume(priv.sandboxID, { port: 8080, trafficAccessToken: '' })).status, 403, 'an empty token is no token');
    assert.equal((await cp.cp.sandboxes.get(priv.sandboxID))?.state, 'paused');
    assert.equal((await autoResume(priv.sandboxID, { port: 49983 })).status, 403, 'the id alone does not wake it through envd');
    assert.equal((await autoResume(priv.sandboxID, { port: 49983, envdAccessToken: 'e'.repeat(64) })).status, 403);
    assert.equal((await autoResume(priv.sandboxID, { port: 8080, envdAccessToken: priv.envdAccessToken })).status, 403, 'envd\'s token only counts on its port');
    assert.equal((await cp.cp.sandboxes.get(priv.sandboxID))?.state, 'paused');
    const viaEnvd = await autoResume(priv.sandboxID, { port: 49983, envdAccessToken: priv.envdAccessToken });
    assert.equal(viaEnvd.status, 200);
    assert.equal((await pause(priv.sandboxID)).status, 204);
    const withToken = await autoResume(priv.sandboxID, { port: 8080, trafficAccessToken: priv.trafficAccessToken });
    assert.equal(withToken.status, 200);
    assert.equal(callsFor('Create', priv.sandboxID).at(-1)?.trafficToken, priv.trafficAccessToken);

    // still pausing (the node did not answer) → 409 once the wait is over
    const stuck = await createOn(a, { autoResume: { enabled: true } });
    a.failPauseWith = Code.Unavailable;
    try {
      assert.equal((await pause(stuck.sandboxID)).status, 502);
    } finally {
      a.failPauseWith = undefined;
    }
    const transitioning = await autoResume(stuck.sandboxID, body);
    assert.deepEqual([transitioning.status, transitioning.body.code], [409, 409]);
    await cp.cp.reconciler.runOnce();
    assert.equal((await autoResume(stuck.sandboxID, body)).status, 200);

    // the other cluster's edge sees only its own sandboxes
    const elsewhere = (await call(cp.url, 'POST', '/v2/sandboxes', { key: otherClusterKey, body: { templateID: 'base' } })).body;
    assert.equal((await autoResume(elsewhere.sandboxID, body)).status, 404);
    assert.equal((await autoResume(elsewhere.sandboxID, body, otherCluster.token)).status, 200);
  });

  test('persistent snapshots: create, list (paged), start sandboxes from id or name, delete; other teams get 404', async () => {
    const s = await createOn(b, { metadata: { role: 'origin' } });
    const r1 = await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/snapshots`, { key, body: { name: 'golden' } });
    assert.equal(r1.status, 201, JSON.stringify(r1.body));
    assert.match(r1.body.snapshotID, /^[a-z0-9]{20}$/);
    assert.deepEqual(r1.body.names, ['golden']);
    const snapCall = cluster.calls.find((c) => c.method === 'Snapshot' && c.snapshotId === r1.body.snapshotID);
    assert.equal(snapCall?.nodeId, 'node-b');
    assert.ok(b.sandboxes.has(s.sandboxID), 'the sandbox runs on');
    assert.equal((await info(s.sandboxID)).body.state, 'running');
    const r2 = await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/snapshots`, { key, body: { name: 'golden' } });
    assert.equal(r2.status, 201);
    const r3 = await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/snapshots`, { key });
    assert.deepEqual([r3.status, r3.body.names], [201, []]);

    const all = await call(cp.url, 'GET', `/snapshots?sandboxID=${s.sandboxID}`, { key });
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.map((x: { snapshotID: string }) => x.snapshotID), [r3.body.snapshotID, r2.body.snapshotID, r1.body.snapshotID]);
    const named = await call(cp.url, 'GET', '/snapshots?name=golden:default', { key });
    assert.deepEqual(named.body.map((x: { snapshotID: string }) => x.snapshotID), [r2.body.snapshotID, r1.body.snapshotID]);
    assert.deepEqual((await call(cp.url, 'GET', `/snapshots?name=${r1.body.snapshotID}`, { key })).body, [{ snapshotID: r1.body.snapshotID, names: ['golden'] }]);
    const seen: string[] = [];
    let next: string | undefined;
    do {
      const page = await call(cp.url, 'GET', `/snapshots?sandboxID=${s.sandboxID}&limit=2${next ? `&nextToken=${encodeURIComponent(next)}` : ''}`, { key });
      seen.push(...page.body.map((x: { snapshotID: string }) => x.snapshotID));
      next = page.headers['x-next-token'] as string | undefined;
    } while (next);
    assert.equal(seen.length, 3);
    assert.deepEqual((await call(cp.url, 'GET', '/snapshots', { key: otherKey })).body, []);

    // a sandbox from the snapshot id: the origin's build and resources, the snapshot's node preferred
    const fromId = await create({ templateID: r1.body.snapshotID, timeout: 60 });
    const c1 = callsFor('Create', fromId.sandboxID)[0]!;
    assert.deepEqual([c1.snapshotId, c1.templateId, c1.buildId, c1.vcpu, c1.memoryMb, c1.nodeId], [r1.body.snapshotID, 'base', '', 2, 512, 'node-b']);
    assert.notEqual(c1.envdAccessToken, s.envdAccessToken, 'a new sandbox gets its own token');
    const d = await info(fromId.sandboxID);
    assert.deepEqual([d.body.templateID, d.body.state, d.body.metadata], ['base', 'running', {}]);
    // by name: the newest of that name
    const fromName = await create({ templateID: 'golden' });
    assert.equal(callsFor('Create', fromName.sandboxID)[0]?.snapshotId, r2.body.snapshotID);

    // another team cannot use, see or delete it
    const foreign = await call(cp.url, 'POST', '/v2/sandboxes', { key: otherKey, body: { templateID: r1.body.snapshotID } });
    assert.equal(foreign.status, 404);
    assert.equal((await call(cp.url, 'DELETE', `/templates/${r1.body.snapshotID}`, { key: otherKey })).status, 404);
    assert.equal((await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/snapshots`, { key: otherKey, body: {} })).status, 404);

    // delete: DeleteSnapshots, then 204; it is gone everywhere
    const del = await call(cp.url, 'DELETE', `/templates/${r1.body.snapshotID}`, { key });
    assert.equal(del.status, 204);
    assert.ok(cluster.calls.some((c) => c.method === 'DeleteSnapshots' && c.snapshotIds?.includes(r1.body.snapshotID)));
    assert.ok(!cluster.storedSnapshots.has(r1.body.snapshotID));
    assert.equal((await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: r1.body.snapshotID } })).status, 404);
    assert.equal((await call(cp.url, 'DELETE', `/templates/${r1.body.snapshotID}`, { key })).status, 404);
    // by name: every snapshot of that name
    assert.equal((await call(cp.url, 'DELETE', '/templates/golden', { key })).status, 204);
    assert.deepEqual((await call(cp.url, 'GET', '/snapshots?name=golden', { key })).body, []);
  });

  test('persistent snapshots: refused names and states', async () => {
    const s = await createOn(a);
    const taken = await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/snapshots`, { key, body: { name: 'base' } });
    assert.equal(taken.status, 409);
    assert.match(taken.body.message, /used by template 'base'/);
    assert.equal((await call(cp.url, 'POST', '/sandboxes/iunknown0000000000000/snapshots', { key, body: {} })).status, 404);
    assert.equal((await pause(s.sandboxID)).status, 204);
    const paused = await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/snapshots`, { key, body: {} });
    assert.equal(paused.status, 409);
    assert.match(paused.body.message, /is paused/);
    assert.equal((await connect(s.sandboxID)).status, 201);
    a.failPauseWith = Code.FailedPrecondition;
    try {
      const refused = await call(cp.url, 'POST', `/sandboxes/${s.sandboxID}/snapshots`, { key, body: {} });
      assert.equal(refused.status, 500);
      assert.match(refused.body.message, /could not be snapshotted/);
    } finally {
      a.failPauseWith = undefined;
    }
    assert.deepEqual((await call(cp.url, 'GET', `/snapshots?sandboxID=${s.sandboxID}`, { key })).body, [], 'a refused snapshot leaves nothing');
  });

  test('bad input → 400 JSON', async () => {
    const s = await create();
    const cases: Array<[string, string, unknown]> = [
      ['POST', `/sandboxes/${s.sandboxID}/pause`, { memory: 'yes' }],
      ['POST', `/sandboxes/${s.sandboxID}/pause`, { memory: 1 }],
      ['POST', `/sandboxes/${s.sandboxID}/pause`, [true]],
      ['POST', `/v2/sandboxes/${s.sandboxID}/connect`, { memory: 'false' }],
      ['POST', `/sandboxes/${s.sandboxID}/resume`, { timeout: 'x' }],
      ['POST', `/sandboxes/${s.sandboxID}/resume`, { memory: 0 }],
      ['POST', `/sandboxes/${s.sandboxID}/snapshots`, { name: 'x'.repeat(129) }],
      ['POST', `/sandboxes/${s.sandboxID}/snapshots`, { name: 'Bad Name' }],
      ['POST', `/sandboxes/${s.sandboxID}/snapshots`, { name: '' }],
      ['POST', `/sandboxes/${s.sandboxID}/snapshots`, { name: 5 }],
      ['POST', `/sandboxes/${s.sandboxID}/snapshots`, { name: 'with:tag' }],
    ];
    for (const [method, path, body] of cases) {
      const r = await call(cp.url, method, path, { key, body });
      assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 400);
    }
    for (const q of ['limit=0', 'limit=101', 'limit=x', 'nextToken=%%%', 'nextToken=bm9wZQ', 'state=sleeping']) {
      const path = q.startsWith('state') ? `/v2/sandboxes?${q}` : `/snapshots?${q}`;
      const r = await call(cp.url, 'GET', path, { key });
      assert.equal(r.status, 400, path);
      assert.equal(r.body.code, 400);
    }
    assert.equal((await info(s.sandboxID)).body.state, 'running', 'nothing happened');
  });
});
