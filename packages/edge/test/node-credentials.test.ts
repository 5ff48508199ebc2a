// Per-node credentials (docs/decisions.md, "Node credentials"): two fake nodes on one real edge, where node B
// (a compromised node holding only its own token) tries to speak for node A — register A's id, claim A's
// sandboxes, make a private sandbox public — and the edge refuses or ignores each attempt.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Code, ConnectError } from '@connectrpc/connect';
import { CreateRequestSchema } from '@cove/contracts/orchestrator';
import { tokenHash } from '@cove/auth-tokens';
import { request } from 'undici';
import { FakeNode } from './fixtures/fake-node.js';
import { CLUSTER_TOKEN, create, linkHeaders, nodeToken, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { send } from './fixtures/http-client.js';

const auth = { authorization: `Bearer ${CLUSTER_TOKEN}` };

async function getJson(url: string): Promise<{ status: number; body: any }> {
  const res = await request(url, { headers: auth });
  return { status: res.statusCode, body: await res.body.json() };
}

async function rejectsWith(p: Promise<unknown>, code: Code): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    const e = ConnectError.from(err);
    assert.equal(e.code, code, `expected ${Code[code]}, got ${Code[e.code]}: ${e.message}`);
    return true;
  });
}

describe('per-node credentials', () => {
  let edge: RunningEdge;
  let a: FakeNode;
  let b: FakeNode;
  const route = (id: string, port: number, extra: Record<string, string> = {}) => ({ 'e2b-sandbox-id': id, 'e2b-sandbox-port': String(port), ...extra });
  /** Which node's proxy served a request: the node token the edge sent it (the fake proxy echoes headers). */
  const servedBy = async (id: string, token?: string): Promise<{ status: number; nodeToken?: string }> => {
    const res = await send(`${edge.trafficUrl}/headers`, { headers: route(id, 8080, token ? { 'e2b-traffic-access-token': token } : {}) });
    return res.status === 200 ? { status: 200, nodeToken: res.json()['cove-node-token'] } : { status: res.status };
  };

  before(async () => {
    edge = await startEdge();
    a = await new FakeNode({ nodeId: 'node-a' }).start();
    b = await new FakeNode({ nodeId: 'node-b' }).start();
    await a.heartbeat(edge.apiUrl);
    await b.heartbeat(edge.apiUrl);
    for (const [node, id, token] of [
      [a, 'priva', 'tok-a'],
      [b, 'privb', 'tok-b'],
    ] as const) {
      await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: id } }), {
        headers: linkHeaders(node.opts.nodeId, { 'cove-sandbox-id': id, 'cove-traffic-access-token': token }),
      });
    }
  });
  after(async () => {
    await edge.close();
    await a.close();
    await b.close();
  });

  it('gives every node its own token and calls each node with its own', async () => {
    assert.notEqual(a.nodeToken, b.nodeToken);
    assert.equal(a.nodeToken, nodeToken('node-a'));
    // The fake nodes accept only their own token, so these calls succeeding is the check; the headers say it too.
    assert.equal(a.rpcHeaders.find((c) => c.method === 'Create')?.headers.get('authorization'), `Bearer ${a.nodeToken}`);
    assert.equal(b.rpcHeaders.find((c) => c.method === 'Create')?.headers.get('authorization'), `Bearer ${b.nodeToken}`);
    assert.deepEqual(await servedBy('priva', 'tok-a'), { status: 200, nodeToken: a.nodeToken });
    assert.deepEqual(await servedBy('privb', 'tok-b'), { status: 200, nodeToken: b.nodeToken });
  });

  it("refuses a heartbeat with another node's token, with a made-up token, or for another node's id", async () => {
    // Node B's own token cannot register node A (an impostor with A's id and its own URLs)…
    const impostor = await new FakeNode({ nodeId: 'node-a', nodeToken: b.nodeToken }).start();
    try {
      await rejectsWith(impostor.heartbeat(edge.apiUrl), Code.PermissionDenied);
      // …nor can node B beat with A's id using any token but A's, or use A's token for itself.
      await rejectsWith(impostor.heartbeat(edge.apiUrl, { token: 'made-up-token-0123456789abcdef' }), Code.PermissionDenied);
      await rejectsWith(b.heartbeat(edge.apiUrl, { token: a.nodeToken }), Code.PermissionDenied);
      await rejectsWith(b.heartbeat(edge.apiUrl, { token: 'wrong-token-0123456789' }), Code.PermissionDenied);
      await rejectsWith(b.heartbeat(edge.apiUrl, { token: '' }), Code.Unauthenticated);
    } finally {
      await impostor.close();
    }
    const nodes = await getJson(`${edge.apiUrl}/v1/nodes`);
    const nodeA = { body: (nodes.body as { nodeId: string }[]).find((n) => n.nodeId === 'node-a') as any };
    assert.equal(nodeA.body.rpcUrl, a.rpcUrl, "node A's registration is untouched");
    assert.equal(nodeA.body.proxyUrl, a.proxyUrl);
    assert.deepEqual(await servedBy('priva', 'tok-a'), { status: 200, nodeToken: a.nodeToken });
  });

  it("ignores a heartbeat that claims another live node's sandbox or blanks its traffic hash", async () => {
    await b.heartbeat(edge.apiUrl, {
      sandboxIds: ['privb', 'priva'],
      sandboxTraffic: [
        { sandboxId: 'priva', trafficTokenSha256: '' },
        { sandboxId: 'privb', trafficTokenSha256: tokenHash('tok-b') },
      ],
    });
    assert.deepEqual((await getJson(`${edge.apiUrl}/v1/sandboxes/priva`)).body, { sandboxId: 'priva', nodeId: 'node-a' });
    // Still private and still on A: no token → 403, the right token → node A's proxy.
    assert.equal((await servedBy('priva')).status, 403);
    assert.deepEqual(await servedBy('priva', 'tok-a'), { status: 200, nodeToken: a.nodeToken });
    assert.equal(b.proxyHeaders.some((h) => h['e2b-sandbox-id'] === 'priva'), false, 'node B never saw traffic of A');
    // A's own next beat leaves it where it is.
    await a.heartbeat(edge.apiUrl);
    assert.deepEqual((await getJson(`${edge.apiUrl}/v1/sandboxes/priva`)).body, { sandboxId: 'priva', nodeId: 'node-a' });
  });

  it("does not let a heartbeat change the traffic hash the control link's Create wrote, even for its own sandbox", async () => {
    await b.heartbeat(edge.apiUrl, { sandboxTraffic: [{ sandboxId: 'privb', trafficTokenSha256: '' }] });
    assert.equal((await servedBy('privb')).status, 403, 'made public by a heartbeat');
    await b.heartbeat(edge.apiUrl, { sandboxTraffic: [{ sandboxId: 'privb', trafficTokenSha256: tokenHash('attacker-token') }] });
    assert.equal((await servedBy('privb', 'attacker-token')).status, 403, "re-keyed to the node's own token");
    assert.deepEqual(await servedBy('privb', 'tok-b'), { status: 200, nodeToken: b.nodeToken });
  });
});
