// The node list a placement uses: a burst of creates asks the edge once, a list that turned out wrong (a node
// refused the create, or the list had no room while a node joined since) is asked for again, and a burst is spread
// over the nodes' warm pools, never booting on one node while another has a slot waiting. Real HTTP into the
// control plane, real HTTP/2 out of it to the wire-level cluster fixture, which counts its `GET /v1/nodes`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Code } from '@connectrpc/connect';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

for (const cacheMs of [2000, 0] as const)
describe(`placement node list (COVE_NODE_LIST_CACHE_MS=${cacheMs})`, () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;

  before(async () => {
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    // The largest value the setting takes: long enough that no test below depends on how fast it runs.
    cp = await startControlPlane({ COVE_NODE_LIST_CACHE_MS: String(cacheMs) });
    ({ key } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 100 }));
  });
  after(async () => {
    await cp.close();
    await cluster.close();
  });

  const create = () => call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base' } });
  const listings = () => cluster.calls.filter((c) => c.method === 'GET /v1/nodes').length;
  const forget = () => {
    // A failed create on every node forgets the list: the next test starts from a fresh one.
    for (const n of cluster.nodes.values()) n.failCreateWith = Code.Unavailable;
    return create().then((r) => {
      for (const n of cluster.nodes.values()) n.failCreateWith = undefined;
      assert.equal(r.status, 502, JSON.stringify(r.body)); // cluster_unavailable: every node refused
    });
  };

  test('a burst of creates asks the edge for the node list once (without the cache: once per create)', async () => {
    await forget();
    const before = listings();
    const burst = await Promise.all(Array.from({ length: 12 }, () => create()));
    for (const r of burst) assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(listings() - before, cacheMs ? 1 : 12);
  });

  test('a create a node refused makes the next placement ask again, and the create goes on to the next node', async () => {
    await forget();
    cluster.addNode('node-b');
    await create(); // a list with both nodes, now shared
    const before = listings();
    const first = cluster.nodes.get(cluster.calls.filter((c) => c.method === 'Create').at(-1)!.nodeId!)!;
    first.failCreateWith = Code.ResourceExhausted;
    const r = await create();
    assert.equal(r.status, 201, JSON.stringify(r.body));
    first.failCreateWith = undefined;
    assert.equal(listings() - before, cacheMs ? 0 : 1, 'the refused create used the shared list');
    await create();
    assert.equal(listings() - before, cacheMs ? 1 : 2, 'the next create asked again');
    cluster.nodes.delete('node-b');
  });

  test('a shared list with no room is asked for again before the create is refused (a node joined since)', async () => {
    await forget();
    const a = cluster.nodes.get('node-a')!;
    const maxBefore = a.maxSandboxes;
    a.maxSandboxes = a.sandboxes.size; // full
    const full = await create();
    assert.equal(full.status, 503, JSON.stringify(full.body));
    assert.match(JSON.stringify(full.body), /capacity/);
    const before = listings();
    cluster.addNode('node-c');
    const r = await create();
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(listings() - before, 1);
    a.maxSandboxes = maxBefore;
    cluster.nodes.delete('node-c');
  });

});

/**
 * A control plane in front of two equal nodes, node-a ranked first (ties go by id), each reporting three warm slots
 * (as it did before the burst), with `before`/`after` hooks of the enclosing describe; one per describe, so a describe
 * starts with no placement counted.
 */
function twoWarmNodes(cacheMs: number): {
  cluster: () => FakeCluster;
  create: () => ReturnType<typeof call>;
  burst: (n: number) => Promise<{ placed: [number, number]; order: string }>;
} {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;
  before(async () => {
    cluster = await startFakeCluster();
    for (const id of ['node-a', 'node-b']) cluster.addNode(id, { warmReady: { base: 3 } });
    cp = await startControlPlane({ COVE_NODE_LIST_CACHE_MS: String(cacheMs) });
    ({ key } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 100 }));
  });
  after(async () => {
    await cp.close();
    await cluster.close();
  });
  const create = () => call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base' } });
  /** `n` creates at once, all started; how many Creates each node was sent, node-a's first. */
  const burst = async (n: number) => {
    const answers = await Promise.all(Array.from({ length: n }, create));
    for (const r of answers) assert.equal(r.status, 201, JSON.stringify(r.body));
    const sent = cluster.calls.filter((c) => c.method === 'Create').map((c) => c.nodeId);
    const on = (id: string) => sent.filter((n) => n === id).length;
    return { placed: [on('node-a'), on('node-b')] as [number, number], order: sent.join(' ') };
  };
  return { cluster: () => cluster, create, burst };
}

for (const cacheMs of [2000, 0] as const)
describe(`placement past a node's warm slots (COVE_NODE_LIST_CACHE_MS=${cacheMs})`, () => {
  const f = twoWarmNodes(cacheMs);

  test('a burst larger than the best node\'s warm slots goes on to where warm slots wait, not to boots on the first', async () => {
    const { placed, order } = await f.burst(6);
    assert.deepEqual(placed, [3, 3], order);
  });
});

for (const cacheMs of [2000, 0] as const)
describe(`a burst spread over the warm pools (COVE_NODE_LIST_CACHE_MS=${cacheMs})`, () => {
  const f = twoWarmNodes(cacheMs);

  test('a burst the best node\'s pool could hold is spread over both pools, so neither runs dry', async () => {
    const { placed, order } = await f.burst(4);
    assert.deepEqual(placed, [2, 2], order);
  });
});

for (const cacheMs of [2000, 0] as const)
describe(`placement counted where the create started (COVE_NODE_LIST_CACHE_MS=${cacheMs})`, () => {
  const f = twoWarmNodes(cacheMs);

  test('a create that failed over to the next node takes its warm slot there, not on the node that refused', async () => {
    // node-a ranks first and refuses: three creates in turn try it, then start on node-b and take its three slots.
    const a = f.cluster().nodes.get('node-a')!;
    a.failCreateWith = Code.ResourceExhausted;
    for (let i = 0; i < 3; i++) {
      const r = await f.create();
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
    a.failCreateWith = undefined;
    const held = () => ['node-a', 'node-b'].map((id) => f.cluster().nodes.get(id)!.sandboxes.size);
    assert.deepEqual(held(), [0, 3]);
    // Both still report three warm slots; node-a's are all left, node-b's are taken: the next three go to node-a.
    await f.burst(3);
    assert.deepEqual(held(), [3, 3]);
  });
});
