// Two edges sharing one Redis: a node registered on one and a sandbox created through it are routable
// and visible through the other.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CreateRequestSchema, DeleteRequestSchema, PauseRequestSchema } from '@cove/contracts/orchestrator';
import { tokenHash } from '@cove/auth-tokens';
import { request } from 'undici';
import { FakeNode } from './fixtures/fake-node.js';
import { CLUSTER_TOKEN, create, linkHeaders, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { send } from './fixtures/http-client.js';
import { startRedis, type RedisFixture } from './fixtures/redis-server.js';

describe('Redis catalog shared by two edges', () => {
  let redis: RedisFixture;
  let a: RunningEdge;
  let b: RunningEdge;
  let node: FakeNode;
  const auth = { authorization: `Bearer ${CLUSTER_TOKEN}` };

  before(async () => {
    redis = await startRedis();
    a = await startEdge({ COVE_EDGE_ID: 'edge-a', COVE_EDGE_REDIS_URL: redis.socketPath });
    b = await startEdge({ COVE_EDGE_ID: 'edge-b', COVE_EDGE_REDIS_URL: redis.socketPath });
    node = await new FakeNode({ nodeId: 'node-r' }).start();
  });
  after(async () => {
    await a.close();
    await b.close();
    await node.close();
    await redis.stop();
  });

  it('shares node registrations', async () => {
    await node.heartbeat(a.apiUrl);
    const res = await request(`${b.apiUrl}/v1/nodes`, { headers: auth });
    const nodes = (await res.body.json()) as { nodeId: string; status: string }[];
    assert.deepEqual(nodes.map((n) => [n.nodeId, n.status]), [['node-r', 'healthy']]);
    const health = await request(`${b.apiUrl}/health`);
    assert.equal(health.statusCode, 200);
    await health.body.dump();
  });

  it('routes traffic on one edge for a sandbox created through the other', async () => {
    await a.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'shared1' } }), {
      headers: linkHeaders('node-r', { 'cove-sandbox-id': 'shared1', 'cove-traffic-access-token': 'tok-shared' }),
    });
    // The control link on edge B reaches the node registered on edge A.
    const list = await b.sandboxClient.list({}, { headers: linkHeaders('node-r') });
    assert.deepEqual(list.sandboxes.map((s) => s.sandboxId), ['shared1']);

    const res = await send(`${b.trafficUrl}/`, { headers: { host: '49983-shared1.cove.test' } });
    assert.equal(res.status, 200);
    assert.equal(res.text, 'hello from shared1:49983');
    assert.equal((await send(`${b.trafficUrl}/`, { headers: { host: '8080-shared1.cove.test' } })).status, 403);
    assert.equal((await send(`${b.trafficUrl}/`, { headers: { host: '8080-shared1.cove.test', 'e2b-traffic-access-token': 'tok-shared' } })).status, 200);

    await b.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'shared1' }), { headers: linkHeaders('node-r', { 'cove-sandbox-id': 'shared1' }) });
    const gone = await send(`${a.trafficUrl}/`, { headers: { host: '49983-shared1.cove.test' } });
    assert.equal(gone.status, 502);
    assert.equal(gone.text, '{"message":"The sandbox was not found","sandboxId":"shared1","code":502}');
  });

  it('forgets a silent node together with its routes', async () => {
    const c = await startEdge({ COVE_EDGE_ID: 'edge-c', COVE_EDGE_REDIS_URL: redis.socketPath }, { directoryOptions: { forgetAfterMs: 100 } });
    const quiet = await new FakeNode({ nodeId: 'node-quiet' }).start();
    try {
      await quiet.heartbeat(c.apiUrl, { sandboxIds: ['quiet1'] });
      const deadline = Date.now() + 10_000;
      for (;;) {
        const res = await request(`${a.apiUrl}/v1/nodes`, { headers: auth });
        const ids = ((await res.body.json()) as { nodeId: string }[]).map((n) => n.nodeId);
        if (!ids.includes('node-quiet')) break;
        assert.ok(Date.now() < deadline, 'node was not forgotten');
        await new Promise((r) => setImmediate(r));
      }
      const gone = await request(`${a.apiUrl}/v1/sandboxes/quiet1`, { headers: auth });
      assert.equal(gone.statusCode, 404);
      await gone.body.dump();
    } finally {
      await quiet.close();
      await c.close();
    }
  });

  it('reconciles the shared catalog from heartbeats', async () => {
    node.addSandbox('hbr1');
    await node.heartbeat(b.apiUrl);
    const res = await request(`${a.apiUrl}/v1/sandboxes/hbr1`, { headers: auth });
    assert.deepEqual(await res.body.json(), { sandboxId: 'hbr1', nodeId: 'node-r' });
  });

  it("shares a paused private sandbox's wake credentials, so every edge refuses to wake it without them", async () => {
    await a.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'pausedr1', envdAccessToken: 'envd-r1' } }), {
      headers: linkHeaders('node-r', { 'cove-sandbox-id': 'pausedr1', 'cove-traffic-access-token': 'tok-r1' }),
    });
    await a.sandboxClient.pause(create(PauseRequestSchema, { sandboxId: 'pausedr1', snapshotId: 'snap-r1', memory: true }), {
      headers: linkHeaders('node-r', { 'cove-sandbox-id': 'pausedr1' }),
    });
    const seen = await b.edge.store.getPaused('pausedr1');
    assert.deepEqual({ ...seen, pausedAt: 0 }, { trafficTokenHash: tokenHash('tok-r1'), envdTokenHash: tokenHash('envd-r1'), pausedAt: 0 });
  });
});
