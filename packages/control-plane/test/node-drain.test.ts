// Draining a node with migration (sandboxes/node-drain.ts) through the admin API of a real control plane, against
// the wire-level cluster fixture: sandboxes move (pause with memory → resume of the same id on another node) and
// keep their end time; one no node can take, or that cannot be checkpointed, is never paused and keeps running; a
// pause whose answer is lost (the node died mid-migration) leaves the sandbox `pausing`, never lost, and the drain
// finishes the move once the reconciler settled it; bad input gets clear errors.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Code } from '@connectrpc/connect';
import { NodeStatus } from '@cove/contracts/orchestrator';
import { eventually } from '@cove/test-support/eventually';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster, type FakeNode } from './fixtures/fake-cluster.js';

interface DrainView {
  status: 'running' | 'done';
  empty: boolean | null;
  remaining: string[];
  sandboxes: Array<{ sandboxId: string; state: string; toNodeId?: string; reason?: string; errorCode?: string }>;
}

describe('draining a node with migration', () => {
  let dir: string;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let a: FakeNode;
  let b: FakeNode;
  let key: string;
  let clusterId: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-drain-'));
    cluster = await startFakeCluster();
    a = cluster.addNode('node-a');
    b = cluster.addNode('node-b');
    cp = await startControlPlane({ COVE_DB_URL: join(dir, 'cp.db'), COVE_TRANSITION_WAIT_MS: '1500' }, dir);
    ({ key, clusterId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const admin = (method: string, path: string, body?: unknown) => call(cp.url, method, path, { admin: ADMIN_TOKEN, body });
  const drainPath = (node: string) => `/admin/clusters/${clusterId}/nodes/${node}/drain`;
  /** Starts a drain and waits (on its progress) until it is done. */
  const drain = async (node: FakeNode, body: unknown = { migrate: true, timeoutSeconds: 30 }): Promise<DrainView> => {
    const r = await admin('POST', drainPath(node.nodeId), body);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    return eventually(async () => {
      const v = (await admin('GET', drainPath(node.nodeId))).body as DrainView;
      return v.status === 'done' ? v : undefined;
    }, 30_000, 'the drain to finish');
  };
  const undrain = async (node: FakeNode) => assert.equal((await admin('POST', `/admin/clusters/${clusterId}/nodes/${node.nodeId}/undrain`)).status, 200);
  const createOn = async (node: FakeNode) => {
    const other = node === a ? b : a;
    other.failCreateWith = Code.ResourceExhausted;
    try {
      const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 600 } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body.sandboxID as string;
    } finally {
      other.failCreateWith = undefined;
    }
  };
  const callsFor = (method: string, id: string) => cluster.calls.filter((c) => c.method === method && c.sandboxId === id);
  const row = async (id: string) => (await cp.cp.sandboxes.get(id))!;

  test('every running sandbox moves to another node with its memory, same id and end time; the node is then empty', async () => {
    const s1 = await createOn(a);
    const s2 = await createOn(a);
    const ends = [(await row(s1)).endAt, (await row(s2)).endAt];
    const v = await drain(a);
    assert.equal(a.status, NodeStatus.DRAINING, 'the node was marked draining');
    assert.deepEqual(
      v.sandboxes.map((m) => [m.sandboxId, m.state, m.toNodeId]).sort(),
      [[s1, 'moved', 'node-b'], [s2, 'moved', 'node-b']].sort(),
    );
    assert.equal(v.empty, true, JSON.stringify(v.remaining));
    for (const [i, id] of [s1, s2].entries()) {
      const p = callsFor('Pause', id);
      assert.ok(p.length >= 1 && p.every((c) => c.memory === true && c.nodeId === 'node-a'), 'paused with memory on its node');
      const c = callsFor('Create', id).at(-1)!;
      assert.equal(c.nodeId, 'node-b');
      assert.equal(c.snapshotId, p[0]!.snapshotId, 'resumed from the pause snapshot');
      assert.equal(c.cold, false, 'with its memory');
      const r = await row(id);
      assert.equal(r.state, 'running');
      assert.equal(r.nodeId, 'node-b');
      assert.ok(Math.abs(r.endAt - ends[i]!) < 2000, 'the end time is kept');
      assert.ok(b.sandboxes.has(id) && !a.sandboxes.has(id));
    }
    // The SDK's view: the same sandbox, running.
    assert.equal((await call(cp.url, 'GET', `/sandboxes/${s1}`, { key })).body.state, 'running');
    await undrain(a);
    assert.equal(a.status, NodeStatus.HEALTHY);
  });

  test('a sandbox no other node can take is never paused: it keeps running and the drain reports it', async () => {
    const s = await createOn(a);
    b.edgeStatus = 'unhealthy';
    try {
      const v = await drain(a);
      const m = v.sandboxes.find((x) => x.sandboxId === s)!;
      assert.equal(m.state, 'stuck');
      assert.equal(m.errorCode, 'no_capacity');
      assert.equal(callsFor('Pause', s).length, 0, 'not paused');
      assert.equal((await row(s)).state, 'running');
      assert.ok(a.sandboxes.has(s));
      assert.equal(v.empty, false);
      assert.ok(v.remaining.some((r) => r.includes(s)), JSON.stringify(v.remaining));
    } finally {
      b.edgeStatus = 'healthy';
      await undrain(a);
    }
    // Clean up for the next tests: nothing else may run on node-a.
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${s}`, { key })).status, 204);
  });

  test('a sandbox that cannot be checkpointed keeps running (no filesystem-only pause that would kill its processes)', async () => {
    const s = await createOn(a);
    a.refuseMemoryPause = true;
    try {
      const v = await drain(a);
      const m = v.sandboxes.find((x) => x.sandboxId === s)!;
      assert.equal(m.state, 'stuck');
      assert.equal(m.errorCode, 'operation_failed');
      assert.ok(callsFor('Pause', s).every((c) => c.memory === true), 'never paused without memory');
      assert.equal((await row(s)).state, 'running');
      assert.ok(a.sandboxes.has(s));
      assert.equal(v.empty, false);
    } finally {
      a.refuseMemoryPause = false;
      await undrain(a);
    }
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${s}`, { key })).status, 204);
  });

  test('the node dies mid-migration (the pause answer is lost): the sandbox is pausing, never lost, and the drain finishes the move', async () => {
    const s = await createOn(a);
    a.pauseCommitsThenFails = Code.Unavailable;
    const r = await admin('POST', drainPath('node-a'), { timeoutSeconds: 60 });
    assert.equal(r.status, 202);
    // The drain saw the failure and holds the sandbox in doubt; the row is mid-pause, its snapshot committed.
    await eventually(async () => ((await admin('GET', drainPath('node-a'))).body as DrainView).sandboxes.some((m) => m.sandboxId === s && m.state === 'in_doubt'), 20_000, 'the move in doubt');
    assert.equal((await row(s)).state, 'pausing');
    assert.ok(!a.sandboxes.has(s) && !b.sandboxes.has(s));
    // A second drain request while this one runs is the same drain.
    assert.equal((await admin('POST', drainPath('node-a'), {})).status, 200);
    assert.equal((await admin('POST', `/admin/clusters/${clusterId}/nodes/node-a/undrain`)).status, 409, 'no undrain while the drain runs');
    // The reconciler settles the pause (repeating the same Pause); the drain then resumes it elsewhere.
    await cp.cp.reconciler.runOnce();
    const v = await eventually(async () => {
      const x = (await admin('GET', drainPath('node-a'))).body as DrainView;
      return x.status === 'done' ? x : undefined;
    }, 30_000, 'the drain to finish');
    const m = v.sandboxes.find((x) => x.sandboxId === s)!;
    assert.equal(m.state, 'moved', JSON.stringify(m));
    assert.equal(m.toNodeId, 'node-b');
    assert.equal((await row(s)).state, 'running');
    assert.ok(b.sandboxes.has(s));
    assert.equal(v.empty, true, JSON.stringify(v.remaining));
    await undrain(a);
  });

  test('bad input: unknown cluster or node, malformed ids and bodies → clear JSON errors; no drain without one', async () => {
    const unknownNode = await admin('POST', drainPath('node-zz'), {});
    assert.equal(unknownNode.status, 404);
    assert.match(unknownNode.body.message, /node-zz/);
    assert.equal((await admin('POST', `/admin/clusters/nope/nodes/node-a/drain`, {})).status, 404);
    assert.equal((await admin('POST', drainPath('bad%20id'), {})).status, 400);
    for (const body of [{ migrate: 'yes' }, { timeoutSeconds: 0 }, { timeoutSeconds: -5 }, { extra: 1 }]) {
      const r = await admin('POST', drainPath('node-b'), body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(typeof r.body.message, 'string');
    }
    assert.equal(b.status, NodeStatus.HEALTHY, 'a refused request drained nothing');
    assert.equal((await admin('GET', drainPath('node-b'))).status, 404);
    assert.equal((await call(cp.url, 'POST', drainPath('node-b'), { body: {} })).status, 401, 'admin token required');
  });
});
