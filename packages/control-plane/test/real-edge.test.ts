// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
// The control link against the real edge (packages/edge, run as its own process from its build): node
// discovery, and Create/Update/Delete forwarded by the edge to a node. The node is the wire-level fixture
// speaking the orchestrator contract, registered with the edge through its heartbeat RPC like a real
// orchestrator. Skipped when the edge is not built.

import { deriveNodeToken } from '@cove/auth-tokens';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { NodeRegistry } from '@cove/contracts/edge';
import { request } from 'undici';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { nodeInfo, startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { EDGE_MAIN, spawnEdge, type EdgeProcess } from './fixtures/edge-process.js';

const CLUSTER_TOKEN = 'real-edge-cluster-token-0123456789';
// The edge derives each node's token from this key; the fixture node holds only its own.
const NODE_CREDENTIAL_KEY = 'edge-node-credential-key-0123456789abcdef';
const NODE_TOKEN = deriveNodeToken(NODE_CREDENTIAL_KEY, 'real-edge-node-1');

describe('control link through the real edge', { skip: existsSync(EDGE_MAIN) ? false : 'edge not built' }, () => {
  let edge: EdgeProcess;
  let edgeUrl: string;
  let node: FakeCluster;
  let cp: RunningControlPlane;
  let key: string;
  let sessions: Http2SessionManager;

  before(async () => {
    // The fixture node authenticates the edge with the node token, as an orchestrator does.
    node = await startFakeCluster(NODE_TOKEN);
    const fakeNode = node.addNode('real-edge-node-1');
    edge = await spawnEdge({ COVE_CLUSTER_TOKEN: CLUSTER_TOKEN, COVE_NODE_CREDENTIAL_KEY: NODE_CREDENTIAL_KEY });
    edgeUrl = `http://127.0.0.1:${edge.apiPort}`;

    sessions = new Http2SessionManager(edgeUrl);
    const registry = createClient(NodeRegistry, createGrpcTransport({ baseUrl: edgeUrl, sessionManager: sessions }));
    await registry.heartbeat(
      { info: nodeInfo(fakeNode), rpcUrl: node.endpoint, proxyUrl: 'http://127.0.0.1:1', sandboxIds: [] },
      { headers: { authorization: `Bearer ${NODE_TOKEN}` } },
    );

    cp = await startControlPlane();
    ({ key } = await setupTeam(cp.url, edgeUrl, CLUSTER_TOKEN));
  });

  after(async () => {
    sessions?.abort();
    await cp?.close();
    await edge?.stop();
    await node?.close();
  });

  test('create, timeout and kill travel through the edge to the node', async () => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 120, network: { allowPublicTraffic: false } } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = r.body.sandboxID as string;
    assert.equal(r.body.domain, 'cove.test');
    const n = node.nodes.get('real-edge-node-1')!;
    assert.ok(n.sandboxes.has(id));
    const created = node.calls.find((c) => c.method === 'Create' && c.sandboxId === id);
    assert.equal(created?.authorization, `Bearer ${NODE_TOKEN}`, 'the edge swaps the cluster token for the node token');
    assert.equal(created?.nodeId, 'real-edge-node-1');

    // The edge recorded the route before answering.
    const route = await request(new URL(`/v1/sandboxes/${id}`, edgeUrl), { headers: { authorization: `Bearer ${CLUSTER_TOKEN}` } });
    assert.equal(route.statusCode, 200);
    assert.deepEqual(await route.body.json(), { sandboxId: id, nodeId: 'real-edge-node-1' });

    assert.equal((await call(cp.url, 'POST', `/sandboxes/${id}/timeout`, { key, body: { timeout: 30 } })).status, 204);
    assert.ok(node.calls.some((c) => c.method === 'Update' && c.sandboxId === id));
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key })).status, 204);
    assert.ok(!n.sandboxes.has(id));
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key })).status, 404);
  });
});
