// Placement weighs disk as it weighs CPU and memory, through real HTTP into a real control plane and the
// wire-level cluster fixture (nodes report disk size, disk in use, and their sandboxes' disks as allocated):
// a team cannot pile sandboxes or builds onto a node whose filesystem is nearly full, or past its disk.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

const GiB = 1n << 30n;

describe('placement by disk', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;

  before(async () => {
    cluster = await startFakeCluster();
    cp = await startControlPlane();
    ({ key } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
  });

  const api = (method: string, path: string, body?: unknown) => call(cp.url, method, path, { key, body });
  const nodeOf = (sandboxId: string) => cluster.calls.find((c) => c.method === 'Create' && c.sandboxId === sandboxId)?.nodeId;

  test('a node with more CPU but an almost full filesystem loses to one with disk; a disk that fits nowhere is 503', async () => {
    // On CPU and memory alone `roomy-cpu` is the better node; its filesystem has 2 GiB left.
    const roomyCpu = cluster.addNode('roomy-cpu', { cpuCount: 8, diskBytes: 100n * GiB, diskUsedBytes: 98n * GiB });
    const roomyDisk = cluster.addNode('roomy-disk', { cpuCount: 4, diskBytes: 100n * GiB, diskUsedBytes: 0n });
    const a = await api('POST', '/sandboxes', { templateID: 'base', timeout: 60 });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    assert.equal(nodeOf(a.body.sandboxID), 'roomy-disk');

    // Once the other node's filesystem is full, the 1 GiB base disk still fits in the 2 GiB left on roomy-cpu…
    roomyDisk.diskUsedBytes = 100n * GiB;
    const b = await api('POST', '/sandboxes', { templateID: 'base', timeout: 60 });
    assert.equal(b.status, 201, JSON.stringify(b.body));
    assert.equal(nodeOf(b.body.sandboxID), 'roomy-cpu');
    // …but a build asking for 4 GiB more free disk fits on neither: no node is asked, the answer is 503.
    const r = await api('POST', '/v3/templates', { name: 'big-disk', cpuCount: 1, memoryMB: 256, minFreeDiskMb: 4096 });
    assert.equal(r.status, 202);
    const builds = cluster.calls.filter((c) => c.method === 'Build').length;
    const s = await api('POST', `/v2/templates/${r.body.templateID}/builds/${r.body.buildID}`, { fromTemplate: 'base', steps: [] });
    assert.deepEqual([s.status, s.body.code], [503, 503], JSON.stringify(s.body));
    assert.equal(cluster.calls.filter((c) => c.method === 'Build').length, builds, 'no node was asked to build');
    // The refused build stays waiting and starts once a node has the room.
    roomyDisk.diskUsedBytes = 0n;
    assert.equal((await api('POST', `/v2/templates/${r.body.templateID}/builds/${r.body.buildID}`, { fromTemplate: 'base', steps: [] })).status, 202);
    assert.equal(cluster.findBuild(r.body.buildID)?.node.nodeId, 'roomy-disk');
    for (const id of [a.body.sandboxID, b.body.sandboxID]) await api('DELETE', `/sandboxes/${id}`);
    cluster.nodes.delete(roomyCpu.nodeId);
    cluster.nodes.delete(roomyDisk.nodeId);
  });

  test("sandboxes' disks count as allocated: a 3 GiB node takes three 1 GiB sandboxes, not a fourth", async () => {
    cluster.addNode('small-disk', { diskBytes: 3n * GiB, diskUsedBytes: 0n });
    const made: string[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await api('POST', '/sandboxes', { templateID: 'base', timeout: 60 });
      assert.equal(c.status, 201, JSON.stringify(c.body));
      made.push(c.body.sandboxID);
    }
    const fourth = await api('POST', '/sandboxes', { templateID: 'base', timeout: 60 });
    assert.deepEqual([fourth.status, fourth.body.code], [503, 503], JSON.stringify(fourth.body));
    await api('DELETE', `/sandboxes/${made[0]}`);
    const again = await api('POST', '/sandboxes', { templateID: 'base', timeout: 60 });
    assert.equal(again.status, 201, 'a killed sandbox gives its disk back');
    for (const id of [...made.slice(1), again.body.sandboxID]) await api('DELETE', `/sandboxes/${id}`);
  });
});
