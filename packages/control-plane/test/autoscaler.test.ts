// The autoscaler's step (autoscaler/controller.ts) against a real control plane's drain and the wire-level cluster
// fixture, with a provider that adds and removes fixture nodes: a burst of failed creates adds a node, the scale-out
// cooldown holds, idleness drains the least-used node — its sandbox moves with its memory (same id) — and the
// node is terminated only once the drain reports it empty; a node that cannot be emptied goes back into service.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Code } from '@connectrpc/connect';
import { NodeStatus } from '@cove/contracts/orchestrator';
import { Autoscaler, inProcessTarget } from '../src/autoscaler/controller.js';
import { parseAutoscalerConfig, type Demand } from '../src/autoscaler/policy.js';
import type { NodeProvider, ProvidedNode } from '../src/autoscaler/provider.js';
import { createLogger } from '../src/logger.js';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

const GiB = 1n << 30n;

/** Nodes as fixture nodes: what a real provider's machines are to the cluster. */
class FixtureProvider implements NodeProvider {
  readonly name = 'fixture';
  launched: string[] = [];
  terminated: string[] = [];
  constructor(private readonly cluster: FakeCluster, private readonly prefix = 'auto') {}
  async list(): Promise<ProvidedNode[]> {
    return [...this.cluster.nodes.keys()].map((nodeId) => ({ nodeId, handle: nodeId }));
  }
  async launch(count: number): Promise<ProvidedNode[]> {
    const out: ProvidedNode[] = [];
    for (let i = 0; i < count; i++) {
      const nodeId = `${this.prefix}-${this.launched.length + 1}`;
      this.cluster.addNode(nodeId, { cpuCount: 16, memoryBytes: 64n * GiB });
      this.launched.push(nodeId);
      out.push({ nodeId, handle: nodeId });
    }
    return out;
  }
  async terminate(nodeId: string): Promise<void> {
    assert.equal(this.cluster.nodes.get(nodeId)?.sandboxes.size, 0, 'a terminated node runs nothing');
    this.cluster.nodes.delete(nodeId);
    this.terminated.push(nodeId);
  }
}

describe('autoscaler step', () => {
  let dir: string;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;
  let clusterId: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-autoscaler-'));
    cluster = await startFakeCluster();
    cluster.addNode('node-a', { cpuCount: 16, memoryBytes: 64n * GiB });
    cp = await startControlPlane({ COVE_DB_URL: join(dir, 'cp.db'), COVE_TRANSITION_WAIT_MS: '1500' }, dir);
    ({ key, clusterId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const createOn = async (nodeId: string) => {
    const others = [...cluster.nodes.values()].filter((n) => n.nodeId !== nodeId);
    for (const o of others) o.failCreateWith = Code.ResourceExhausted;
    try {
      const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 600 } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body.sandboxID as string;
    } finally {
      for (const o of others) o.failCreateWith = undefined;
    }
  };

  test('a burst adds a node, the cooldown holds; idleness drains the least-used node (its sandbox moves) and removes it once empty', async () => {
    const provider = new FixtureProvider(cluster);
    let demand: Demand = { failedCreates: 3 };
    let now = 1_000_000;
    const config = parseAutoscalerConfig({ minNodes: 1, maxNodes: 3, targetFreeFraction: 0.2, scaleInFreeFraction: 0.5, scaleOutCooldownMs: 60_000, scaleInCooldownMs: 300_000 });
    const scaler = new Autoscaler({
      target: inProcessTarget(await cp.cp.clusters.require(clusterId), cp.cp.links, cp.cp.drains),
      provider,
      config,
      demand: () => demand,
      log: createLogger('silent'),
      drainTimeoutMs: 30_000,
      now: () => now,
    });

    const out = await scaler.step();
    assert.equal(out.decision.action, 'scale_out');
    assert.match(out.decision.reason, /3 create\(s\) failed for lack of capacity/);
    assert.deepEqual(provider.launched, ['auto-1']);
    assert.ok(cluster.nodes.has('auto-1'));

    now += 30_000;
    const cooled = await scaler.step();
    assert.equal(cooled.decision.action, 'none');
    assert.match(cooled.decision.reason, /scale-out cooldown/);
    assert.equal(provider.launched.length, 1);

    // Load settles: one sandbox on each node, no failed creates. After the scale-in cooldown the least-used
    // node (ties broken by id) drains; its sandbox moves to the other.
    demand = { failedCreates: 0 };
    const onA = await createOn('node-a');
    const onAuto = await createOn('auto-1');
    now += 300_000;
    const scaleIn = await scaler.step();
    assert.equal(scaleIn.decision.action, 'scale_in');
    const leaving = scaleIn.decision.action === 'scale_in' ? scaleIn.decision.nodeId : '';
    const staying = leaving === 'node-a' ? 'auto-1' : 'node-a';
    const moved = leaving === 'node-a' ? onA : onAuto;
    assert.equal(cluster.nodes.get(leaving)!.status, NodeStatus.DRAINING, 'drained first');
    assert.equal(provider.terminated.length, 0, 'not removed before its drain is done');
    await cp.cp.drains.settled(clusterId, leaving);

    now += 1000;
    const removed = await scaler.step();
    assert.deepEqual(removed.did, [`terminated node ${leaving} (drained, empty)`]);
    assert.deepEqual(provider.terminated, [leaving]);
    now += 300_000;
    const atMin = await scaler.step();
    assert.equal(atMin.decision.action, 'none');
    assert.match(atMin.decision.reason, /at minNodes 1/);
    const row = (await cp.cp.sandboxes.get(moved))!;
    assert.equal(row.state, 'running');
    assert.equal(row.nodeId, staying, 'the same sandbox runs on the node that stays');
    const create = cluster.calls.filter((c) => c.method === 'Create' && c.sandboxId === moved).at(-1)!;
    assert.ok(create.snapshotId && create.cold === false, 'resumed from its pause snapshot with memory');
    for (const id of [onA, onAuto]) assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key })).status, 204);
  });

  test('a node whose drain cannot empty it is not terminated: it goes back into service', async () => {
    const provider = new FixtureProvider(cluster, 'more');
    await provider.launch(1); // beside the node that stayed
    const [first, second] = [...cluster.nodes.keys()];
    let now = 5_000_000;
    const scaler = new Autoscaler({
      target: inProcessTarget(await cp.cp.clusters.require(clusterId), cp.cp.links, cp.cp.drains),
      provider,
      config: parseAutoscalerConfig({ minNodes: 1, maxNodes: 3, scaleInCooldownMs: 0 }),
      demand: () => ({ failedCreates: 0 }),
      log: createLogger('silent'),
      drainTimeoutMs: 5_000,
      now: () => now,
    });
    // Both nodes hold a sandbox; the one on the leaving node cannot be checkpointed.
    const ids = [await createOn(first!), await createOn(second!)];
    for (const n of cluster.nodes.values()) n.refuseMemoryPause = true;
    try {
      const d = await scaler.step();
      assert.equal(d.decision.action, 'scale_in');
      const leaving = d.decision.action === 'scale_in' ? d.decision.nodeId : '';
      await cp.cp.drains.settled(clusterId, leaving);
      now += 1000;
      const back = await scaler.step();
      assert.equal(back.did.length, 1);
      assert.ok(back.did[0]!.startsWith(`node ${leaving} could not be emptied`) && back.did[0]!.endsWith('back in service'), back.did[0]);
      assert.deepEqual(provider.terminated, []);
      assert.equal(cluster.nodes.get(leaving)!.status, NodeStatus.HEALTHY);
      for (const id of ids) assert.equal((await cp.cp.sandboxes.get(id))!.state, 'running', 'nothing was paused or lost');
    } finally {
      for (const n of cluster.nodes.values()) n.refuseMemoryPause = false;
      for (const id of ids) await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key });
    }
  });
  test('an autoscaler restarted mid scale in finishes it (the leaving node is handed over), and terminates only once empty', async () => {
    const provider = new FixtureProvider(cluster, 'again');
    await provider.launch(1);
    const deps = {
      target: inProcessTarget(await cp.cp.clusters.require(clusterId), cp.cp.links, cp.cp.drains),
      provider,
      config: parseAutoscalerConfig({ minNodes: 1, maxNodes: 4, scaleInCooldownMs: 0 }),
      demand: () => ({ failedCreates: 0 }),
      log: createLogger('silent'),
      drainTimeoutMs: 5_000,
    };
    let persisted: string | undefined;
    const first = new Autoscaler({ ...deps, onLeaving: (n) => (persisted = n) });
    const d = await first.step();
    assert.equal(d.decision.action, 'scale_in');
    const leaving = d.decision.action === 'scale_in' ? d.decision.nodeId : '';
    assert.equal(persisted, leaving, 'the node being scaled in is handed to whoever persists it before anything else');
    // The first autoscaler is gone; a new one starts from what was persisted.
    const second = new Autoscaler({ ...deps, leaving: persisted, onLeaving: (n) => (persisted = n) });
    assert.equal(second.leavingNode, leaving);
    await cp.cp.drains.settled(clusterId, leaving);
    const done = await second.step();
    assert.deepEqual(done.did, [`terminated node ${leaving} (drained, empty)`]);
    assert.equal(persisted, undefined);
    assert.equal(second.events.at(-1)?.action, 'terminated');
    assert.ok(!cluster.nodes.has(leaving));
  });
});
