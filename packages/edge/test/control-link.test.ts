// Heartbeats, the REST cluster API and the control link, against a real edge and a fake node on loopback.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Code, ConnectError } from '@connectrpc/connect';
import { NodeStatus } from '@cove/contracts/orchestrator';
import { connect as h2connect } from 'node:http2';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { request } from 'undici';
import { FakeNode } from './fixtures/fake-node.js';
import { CLUSTER_TOKEN, create, linkHeaders, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { CreateRequestSchema, DeleteRequestSchema, PauseRequestSchema, SnapshotRequestSchema } from '@cove/contracts/orchestrator';

async function getJson(url: string, headers: Record<string, string> = {}, method: 'GET' | 'POST' = 'GET') {
  const res = await request(url, { method, headers });
  return { status: res.statusCode, body: (await res.body.json()) as any };
}

async function rejectsWith(p: Promise<unknown>, code: Code, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    const e = ConnectError.from(err);
    assert.equal(e.code, code, `expected ${Code[code]}, got ${Code[e.code]}: ${e.message}`);
    if (message) assert.match(e.rawMessage, message);
    return true;
  });
}

describe('edge API port', () => {
  let edge: RunningEdge;
  let node: FakeNode;
  const auth = { authorization: `Bearer ${CLUSTER_TOKEN}` };

  before(async () => {
    edge = await startEdge();
    node = await new FakeNode({ nodeId: 'node-a' }).start();
  });
  after(async () => {
    await edge.close();
    await node.close();
  });

  it('is unhealthy until a node registers', async () => {
    const res = await getJson(`${edge.apiUrl}/health`);
    assert.deepEqual(res, { status: 503, body: { status: 'unhealthy' } });
  });

  it('rejects heartbeats without or with a wrong node token', async () => {
    await rejectsWith(node.heartbeat(edge.apiUrl, { token: '' }), Code.Unauthenticated);
    await rejectsWith(node.heartbeat(edge.apiUrl, { token: 'wrong-token-0123456789' }), Code.PermissionDenied);
    const nodes = await getJson(`${edge.apiUrl}/v1/nodes`, auth);
    assert.deepEqual(nodes.body, []);
  });

  it('registers a node from its heartbeat', async () => {
    const res = await node.heartbeat(edge.apiUrl);
    assert.equal(res.intervalMs, 2000);
    const nodes = await getJson(`${edge.apiUrl}/v1/nodes`, auth);
    assert.equal(nodes.status, 200);
    assert.equal(nodes.body.length, 1, JSON.stringify(nodes.body));
    const [n] = nodes.body;
    assert.equal(n.nodeId, 'node-a');
    assert.equal(n.status, 'healthy');
    assert.equal(n.rpcUrl, node.rpcUrl);
    assert.equal(n.proxyUrl, node.proxyUrl);
    assert.equal(n.info.nodeId, 'node-a');
    assert.equal(n.info.capacity.cpuCount, 4);
    assert.ok(!Number.isNaN(Date.parse(n.lastHeartbeatAt)));
    assert.deepEqual(await getJson(`${edge.apiUrl}/health`), { status: 200, body: { status: 'healthy' } });
  });

  it('serves /v1/info and requires the cluster token on the REST API', async () => {
    const info = await getJson(`${edge.apiUrl}/v1/info`, { 'x-api-key': CLUSTER_TOKEN });
    assert.equal(info.status, 200);
    assert.equal(info.body.nodeId, 'edge-test');
    assert.equal(info.body.status, 'healthy');
    assert.equal(typeof info.body.version, 'string');
    assert.deepEqual(await getJson(`${edge.apiUrl}/v1/nodes`), {
      status: 401,
      body: { code: 401, message: 'missing cluster token (authorization: Bearer or X-API-Key)' },
    });
    assert.equal((await getJson(`${edge.apiUrl}/v1/nodes`, { authorization: 'Bearer nope' })).status, 403);
    assert.equal((await getJson(`${edge.apiUrl}/v1/nope`, auth)).status, 404);
  });

  it('forwards Create/List/Delete/Info to the node and keeps the catalog in step', async () => {
    const created = await edge.sandboxClient.create(
      create(CreateRequestSchema, { sandbox: { sandboxId: 'sbx1', templateId: 'base' } }),
      { headers: linkHeaders('node-a', { 'cove-sandbox-id': 'sbx1' }) },
    );
    assert.equal(created.sandbox?.sandboxId, 'sbx1');
    assert.equal(created.warmPoolHit, true);
    // The node saw the node token, not the cluster token, and the routing headers.
    const seen = node.rpcHeaders.at(-1)!;
    assert.equal(seen.method, 'Create');
    assert.equal(seen.headers.get('authorization'), `Bearer ${node.nodeToken}`);
    assert.equal(seen.headers.get('cove-node-id'), 'node-a');
    assert.deepEqual(await getJson(`${edge.apiUrl}/v1/sandboxes/sbx1`, auth), { status: 200, body: { sandboxId: 'sbx1', nodeId: 'node-a' } });

    const list = await edge.sandboxClient.list({}, { headers: linkHeaders('node-a') });
    assert.deepEqual(list.sandboxes.map((s) => s.sandboxId), ['sbx1']);
    const info = await edge.infoClient.info({}, { headers: linkHeaders('node-a') });
    assert.equal(info.nodeId, 'node-a');

    // Errors from the node pass through with their status and message.
    await rejectsWith(
      edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'sbx1' } }), {
        headers: linkHeaders('node-a', { 'cove-sandbox-id': 'sbx1' }),
      }),
      Code.AlreadyExists,
      /exists/,
    );

    await edge.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'sbx1' }), {
      headers: linkHeaders('node-a', { 'cove-sandbox-id': 'sbx1' }),
    });
    assert.equal((await getJson(`${edge.apiUrl}/v1/sandboxes/sbx1`, auth)).status, 404);
    await rejectsWith(
      edge.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'sbx1' }), { headers: linkHeaders('node-a', { 'cove-sandbox-id': 'sbx1' }) }),
      Code.NotFound,
    );
  });

  it('removes the route of a paused sandbox, keeps it on Snapshot and restores it on a Create from the snapshot', async () => {
    const catalog = async (id: string) => getJson(`${edge.apiUrl}/v1/sandboxes/${id}`, auth);
    const headers = linkHeaders('node-a', { 'cove-sandbox-id': 'psbx1' });
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'psbx1' } }), { headers });
    assert.equal((await catalog('psbx1')).status, 200);

    // A persistent snapshot leaves the sandbox running where it is.
    const snap = await edge.sandboxClient.snapshot(create(SnapshotRequestSchema, { sandboxId: 'psbx1', snapshotId: 'persist-1' }), { headers });
    assert.equal(snap.snapshot?.snapshotId, 'persist-1');
    assert.deepEqual(await catalog('psbx1'), { status: 200, body: { sandboxId: 'psbx1', nodeId: 'node-a' } });

    // A failed Pause changes nothing: the sandbox is still where it was.
    await rejectsWith(
      edge.sandboxClient.pause(create(PauseRequestSchema, { sandboxId: 'nosuch', snapshotId: 'p-0', memory: true }), {
        headers: linkHeaders('node-a', { 'cove-sandbox-id': 'psbx1' }),
      }),
      Code.NotFound,
    );
    assert.equal((await catalog('psbx1')).status, 200);

    const paused = await edge.sandboxClient.pause(create(PauseRequestSchema, { sandboxId: 'psbx1', snapshotId: 'pause-1', memory: true }), { headers });
    assert.equal(paused.snapshot?.snapshotId, 'pause-1');
    assert.equal(node.rpcHeaders.at(-1)?.method, 'Pause');
    assert.equal((await catalog('psbx1')).status, 404);

    // Resume = Create from the snapshot: a Create like any other.
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'psbx1', snapshotId: 'pause-1' } }), { headers });
    assert.deepEqual(await catalog('psbx1'), { status: 200, body: { sandboxId: 'psbx1', nodeId: 'node-a' } });
    await edge.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'psbx1' }), { headers });
  });

  it('takes the route away while the node pauses, and gives it back when the pause fails', async () => {
    const catalog = async (id: string) => (await getJson(`${edge.apiUrl}/v1/sandboxes/${id}`, auth)).status;
    const headers = linkHeaders('node-a', { 'cove-sandbox-id': 'psbx3' });
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'psbx3' } }), { headers });
    let release!: (fail: boolean) => void;
    let entered!: () => void;
    const inPause = new Promise<void>((r) => (entered = r));
    node.beforePause = () =>
      new Promise<void>((resolve, reject) => {
        release = (fail) => (fail ? reject(new ConnectError('cannot checkpoint', Code.FailedPrecondition)) : resolve());
        entered();
      });
    try {
      const failing = edge.sandboxClient.pause(create(PauseRequestSchema, { sandboxId: 'psbx3', snapshotId: 'pause-3', memory: true }), { headers });
      // While the node works on it, traffic finds no route (and would go the auto-resume way).
      await inPause;
      assert.equal(await catalog('psbx3'), 404);
      release(true);
      await rejectsWith(failing, Code.FailedPrecondition);
      assert.equal(await catalog('psbx3'), 200, 'the sandbox runs on: its route is back');
    } finally {
      node.beforePause = undefined;
    }
    await edge.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'psbx3' }), { headers });
  });

  it('removes a paused sandbox only from the node that paused it', async () => {
    const other = await new FakeNode({ nodeId: 'node-p2' }).start();
    try {
      await other.heartbeat(edge.apiUrl);
      // psbx2 runs on node-a per the catalog; a (stale) Pause answered by node-p2 must not drop that route.
      await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'psbx2' } }), {
        headers: linkHeaders('node-a', { 'cove-sandbox-id': 'psbx2' }),
      });
      other.addSandbox('psbx2');
      await edge.sandboxClient.pause(create(PauseRequestSchema, { sandboxId: 'psbx2', snapshotId: 'pause-2', memory: false }), {
        headers: linkHeaders('node-p2', { 'cove-sandbox-id': 'psbx2' }),
      });
      assert.deepEqual(await getJson(`${edge.apiUrl}/v1/sandboxes/psbx2`, auth), { status: 200, body: { sandboxId: 'psbx2', nodeId: 'node-a' } });
      await edge.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'psbx2' }), { headers: linkHeaders('node-a', { 'cove-sandbox-id': 'psbx2' }) });
    } finally {
      await other.close();
    }
  });

  it('carries large messages through HTTP/2 flow control', async () => {
    const big = 'x'.repeat(3 * 1024 * 1024);
    const created = await edge.sandboxClient.create(
      create(CreateRequestSchema, { sandbox: { sandboxId: 'bigone', templateId: big } }),
      { headers: linkHeaders('node-a', { 'cove-sandbox-id': 'bigone' }) },
    );
    assert.equal(created.sandbox?.templateId.length, big.length);
    const list = await edge.sandboxClient.list({}, { headers: linkHeaders('node-a') });
    assert.equal(list.sandboxes.find((s) => s.sandboxId === 'bigone')?.templateId.length, big.length);
    await edge.sandboxClient.delete(create(DeleteRequestSchema, { sandboxId: 'bigone' }), { headers: linkHeaders('node-a', { 'cove-sandbox-id': 'bigone' }) });
  });

  it('forwards TemplateService Build/BuildStatus/DeleteBuilds to the node named by cove-node-id', async () => {
    const steps = [
      { type: 'RUN', args: ['echo hi'] },
      { type: 'COPY', args: ['app', '/app'], filesHash: 'a'.repeat(64) },
    ];
    await edge.templateClient.build(
      { templateId: 'tpl1', buildId: 'b-1', teamId: 'team-1', source: { case: 'fromBuildId', value: 'base' }, steps, vcpu: 2, memoryMb: 512 },
      { headers: linkHeaders('node-a') },
    );
    const seen = node.rpcHeaders.at(-1)!;
    assert.equal(seen.method, 'Build');
    assert.equal(seen.headers.get('authorization'), `Bearer ${node.nodeToken}`);
    const build = node.builds.get('b-1');
    assert.equal(build?.teamId, 'team-1');
    assert.equal(build?.steps[1]?.filesHash, 'a'.repeat(64));
    assert.deepEqual(build?.source, { case: 'fromBuildId', value: 'base' });

    const page = await edge.templateClient.buildStatus({ templateId: 'tpl1', buildId: 'b-1', logsOffset: 1, limit: 10 }, { headers: linkHeaders('node-a') });
    assert.equal(page.logsTotal, 2);
    assert.deepEqual(page.logEntries.map((e) => e.message), ['step 2: COPY']);
    assert.equal(page.memoryMb, 512);

    // The node's own errors pass through unchanged.
    await rejectsWith(edge.templateClient.build({ templateId: 'tpl1', buildId: 'b-1' }, { headers: linkHeaders('node-a') }), Code.AlreadyExists, /build exists/);
    await edge.templateClient.deleteBuilds({ templateId: 'tpl1', buildIds: ['b-1'] }, { headers: linkHeaders('node-a') });
    await rejectsWith(
      edge.templateClient.buildStatus({ templateId: 'tpl1', buildId: 'b-1' }, { headers: linkHeaders('node-a') }),
      Code.NotFound,
      /build b-1 not found/,
    );
    // Same routing rules as SandboxService: unknown node, missing or wrong cluster token.
    await rejectsWith(
      edge.templateClient.build({ templateId: 'tpl1', buildId: 'b-2' }, { headers: linkHeaders('node-zzz') }),
      Code.NotFound,
      /^node node-zzz is not registered with this edge$/,
    );
    await rejectsWith(edge.templateClient.build({ templateId: 'tpl1', buildId: 'b-2' }, { headers: { 'cove-node-id': 'node-a' } }), Code.Unauthenticated);
    await rejectsWith(
      edge.templateClient.buildStatus({ templateId: 'tpl1', buildId: 'b-2' }, { headers: { authorization: 'Bearer wrong-cluster-token', 'cove-node-id': 'node-a' } }),
      Code.PermissionDenied,
    );
    assert.equal(node.builds.has('b-2'), false);
  });

  it('answers NOT_FOUND for an unknown node and checks the cluster token', async () => {
    await rejectsWith(edge.infoClient.info({}, { headers: linkHeaders('node-zzz') }), Code.NotFound, /^node node-zzz is not registered with this edge$/);
    await rejectsWith(edge.infoClient.info({}, { headers: { 'cove-node-id': 'node-a' } }), Code.Unauthenticated);
    await rejectsWith(edge.infoClient.info({}, { headers: { authorization: 'Bearer wrong-cluster-token', 'cove-node-id': 'node-a' } }), Code.PermissionDenied);
  });

  it('serves the REST API over h2c too (the control plane shares one connection)', async () => {
    const session = h2connect(edge.apiUrl);
    try {
      const stream = session.request({ ':method': 'GET', ':path': '/v1/nodes', ...auth });
      stream.end();
      const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
      let text = '';
      for await (const c of stream) text += String(c);
      assert.equal(headers[':status'], 200);
      assert.ok(JSON.parse(text).some((n: { nodeId: string }) => n.nodeId === 'node-a'));
    } finally {
      session.close();
    }
  });

  it('answers UNAVAILABLE when a registered node cannot be reached', async () => {
    const dead = createServer().listen(0, '127.0.0.1');
    await once(dead, 'listening');
    const port = (dead.address() as { port: number }).port;
    await new Promise((r) => dead.close(r));
    const ghost = await new FakeNode({ nodeId: 'node-dead' }).start();
    ghost.rpcUrl = `http://127.0.0.1:${port}`;
    await ghost.heartbeat(edge.apiUrl);
    await rejectsWith(edge.infoClient.info({}, { headers: linkHeaders('node-dead') }), Code.Unavailable, /node-dead/);
    await ghost.close();
  });

  it('rebuilds the catalog from heartbeats', async () => {
    node.addSandbox('hb1');
    await node.heartbeat(edge.apiUrl, { sandboxIds: ['hb1'] });
    assert.deepEqual((await getJson(`${edge.apiUrl}/v1/sandboxes/hb1`, auth)).body, { sandboxId: 'hb1', nodeId: 'node-a' });
    node.sandboxes.delete('hb1');
  });

  it('drains and undrains a node through InfoService/SetStatus', async () => {
    const drained = await getJson(`${edge.apiUrl}/v1/nodes/node-a/drain`, auth, 'POST');
    assert.deepEqual(drained, { status: 200, body: { nodeId: 'node-a', status: 'draining' } });
    assert.deepEqual(node.statusCalls, [NodeStatus.DRAINING]);
    // The node reports draining in its next heartbeat; discovery shows it.
    await node.heartbeat(edge.apiUrl);
    assert.equal((await getJson(`${edge.apiUrl}/v1/nodes`, auth)).body[0].status, 'draining');
    const undrained = await getJson(`${edge.apiUrl}/v1/nodes/node-a/undrain`, auth, 'POST');
    assert.equal(undrained.body.status, 'healthy');
    assert.deepEqual(node.statusCalls, [NodeStatus.DRAINING, NodeStatus.HEALTHY]);
    const setStatusCall = node.rpcHeaders.filter((c) => c.method === 'SetStatus').at(-1)!;
    assert.equal(setStatusCall.headers.get('authorization'), `Bearer ${node.nodeToken}`);
    assert.deepEqual(await getJson(`${edge.apiUrl}/v1/nodes/nobody/drain`, auth, 'POST'), {
      status: 404,
      body: { code: 404, message: 'node nobody is not registered with this edge' },
    });
  });

  it('reports draining after drain()', async () => {
    edge.edge.drain();
    assert.deepEqual(await getJson(`${edge.apiUrl}/health`), { status: 200, body: { status: 'draining' } });
  });
});
