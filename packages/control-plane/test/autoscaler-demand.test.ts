// The autoscaler's create-demand signal through real HTTP into a real control plane and the wire-level cluster
// fixture: a create that no node has room for is counted for its cluster and shown on the admin route the
// autoscaler reads (`GET /admin/clusters/{id}/demand`); a create refused for another reason is not; the route
// wants the admin token and a known cluster.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Autoscaler } from '../src/autoscaler/controller.js';
import { parseAutoscalerConfig } from '../src/autoscaler/policy.js';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

describe('create demand for the autoscaler', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;
  let clusterId: string;

  before(async () => {
    cluster = await startFakeCluster();
    cp = await startControlPlane();
    ({ key, clusterId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
  });

  const api = (method: string, path: string, body?: unknown) => call(cp.url, method, path, { key, body });
  const demand = (id = clusterId, admin: string | null = ADMIN_TOKEN) => call(cp.url, 'GET', `/admin/clusters/${id}/demand`, admin ? { admin } : {});

  test('creates no node has room for are counted and drive a scale out; other refusals are not counted', async () => {
    const n = cluster.addNode('tiny', { cpuCount: 1, memoryBytes: 256n << 20n });
    const before = await demand();
    assert.equal(before.status, 200);
    assert.deepEqual(before.body, { failedCreates: 0, lastFailedCreateAt: null, windowSeconds: 300 });

    // The base template wants more memory than the only node has: 503 no_capacity, twice.
    for (let i = 0; i < 2; i++) {
      const r = await api('POST', '/sandboxes', { templateID: 'base', timeout: 60 });
      assert.equal(r.status, 503, JSON.stringify(r.body));
    }
    // Refused for the caller's own mistake: not demand.
    assert.equal((await api('POST', '/sandboxes', { templateID: 'no-such-template', timeout: 60 })).status, 404);
    const after = await demand();
    assert.equal(after.body.failedCreates, 2, JSON.stringify(after.body));
    assert.ok(after.body.lastFailedCreateAt > 0);

    // What the autoscaler decides from it (the target reads the same view the route serves).
    const scaler = new Autoscaler({
      target: {
        nodes: async () => [{ nodeId: 'tiny', status: 'healthy', cpuCount: 64, cpuAllocated: 0, memoryBytes: 64 << 30, memoryAllocatedBytes: 0, sandboxCount: 0, warmPoolDepth: 0, warmPoolTarget: 0 }],
        demand: async () => (await demand()).body,
        drain: async () => undefined,
        drainState: async () => undefined,
        undrain: async () => undefined,
      },
      provider: { name: 'test', list: async () => [], launch: async (c) => Array.from({ length: c }, (_, i) => ({ nodeId: `new-${i}`, handle: `h${i}` })), terminate: async () => undefined },
      config: parseAutoscalerConfig({ minNodes: 1, maxNodes: 3, targetFreeFraction: 0.2, scaleInFreeFraction: 0.5, scaleOutCooldownMs: 60_000 }),
      log: { info: () => undefined },
    });
    const step = await scaler.step();
    assert.equal(step.decision.action, 'scale_out', JSON.stringify(step.decision));
    assert.match(step.decision.reason, /2 create\(s\) failed for lack of capacity/);
    assert.deepEqual(step.did, ['launched new-0']);
    cluster.nodes.delete(n.nodeId);
  });

  test('the route wants the admin token and a known cluster', async () => {
    assert.equal((await demand(clusterId, null)).status, 401);
    const unknown = await demand('00000000-0000-4000-8000-000000000000');
    assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
    assert.match(unknown.body.message, /not found/);
  });
});
