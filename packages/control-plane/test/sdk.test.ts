// The unchanged e2b SDK (2.51) against the control plane, with the wire-level cluster fixture behind it.
// Only API calls are exercised here (no envd); the integration suite runs the SDK against the full stack.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AuthenticationError, RateLimitError, Sandbox, SandboxNotFoundError } from 'e2b';
import { setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

describe('unchanged e2b SDK against the control plane', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let apiKey: string;
  let limitedKey: string;
  const saved = { url: process.env.E2B_API_URL, key: process.env.E2B_API_KEY };

  before(async () => {
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane();
    ({ key: apiKey } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 20 }));
    ({ key: limitedKey } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'limited', maxConcurrentSandboxes: 1 }));
    process.env.E2B_API_URL = cp.url;
    process.env.E2B_API_KEY = apiKey;
  });

  after(async () => {
    if (saved.url === undefined) delete process.env.E2B_API_URL;
    else process.env.E2B_API_URL = saved.url;
    if (saved.key === undefined) delete process.env.E2B_API_KEY;
    else process.env.E2B_API_KEY = saved.key;
    await cp.close();
    await cluster.close();
  });

  test('Sandbox.kill of a missing id returns false', async () => {
    assert.equal(await Sandbox.kill('i0000000000000000000a'), false);
  });

  test('the mcp option is refused clearly (no MCP gateway in Cove templates), and no sandbox is started', async () => {
    const before = cluster.nodes.get('node-a')!.sandboxes.size;
    await assert.rejects(
      Sandbox.create('base', { mcp: { exa: { apiKey: 'k' } } } as never),
      (err: Error) => /501/.test(err.message) && /MCP gateway/.test(err.message),
    );
    assert.equal(cluster.nodes.get('node-a')!.sandboxes.size, before);
  });

  test('a wrong key is an AuthenticationError', async () => {
    await assert.rejects(Sandbox.kill('i0000000000000000000a', { apiKey: `e2b_${'1'.repeat(40)}` }), AuthenticationError);
  });

  test('create, getInfo, list with metadata, setTimeout, connect, kill', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000, metadata: { 'user id': 'a&b=c', suite: 'sdk' } });
    assert.match(sbx.sandboxId, /^i[a-z0-9]{20}$/);
    assert.equal(sbx.sandboxDomain, 'cove.test');
    assert.ok(cluster.nodes.get('node-a')!.sandboxes.has(sbx.sandboxId));

    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, 'base');
    assert.equal(info.state, 'running');
    assert.deepEqual(info.metadata, { 'user id': 'a&b=c', suite: 'sdk' });
    assert.equal(info.endAt.getTime() - info.startedAt.getTime(), 120_000);

    const other = await Sandbox.create('base', { metadata: { suite: 'other' } });
    const paginator = Sandbox.list({ query: { metadata: { 'user id': 'a&b=c' }, state: ['running'] } });
    const items = await paginator.nextItems();
    assert.deepEqual(items.map((s) => s.sandboxId), [sbx.sandboxId]);
    assert.equal(paginator.hasNext, false);

    // startedAfter is inclusive: the sandbox that started at exactly that instant is listed.
    const since = Sandbox.list({ query: { startedAfter: info.startedAt } as never, limit: 100 });
    assert.ok((await since.nextItems()).some((s) => s.sandboxId === sbx.sandboxId));

    const pages = Sandbox.list({ limit: 1 });
    const first = await pages.nextItems();
    assert.equal(first.length, 1);
    assert.equal(pages.hasNext, true);
    const second = await pages.nextItems();
    assert.equal(second.length, 1);
    assert.notEqual(second[0]!.sandboxId, first[0]!.sandboxId);

    await sbx.setTimeout(30_000);
    const shortened = await sbx.getInfo();
    assert.ok(shortened.endAt.getTime() < info.endAt.getTime());

    const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 });
    assert.equal(again.sandboxId, sbx.sandboxId);
    const afterConnect = await again.getInfo();
    assert.ok(afterConnect.endAt.getTime() >= shortened.endAt.getTime());

    assert.equal(await sbx.kill(), true);
    assert.equal(await Sandbox.kill(sbx.sandboxId), false);
    assert.ok(!cluster.nodes.get('node-a')!.sandboxes.has(sbx.sandboxId));
    await assert.rejects(Sandbox.connect(sbx.sandboxId), SandboxNotFoundError);
    assert.equal(await Sandbox.kill(other.sandboxId), true);
  });

  test('pause, list paused, connect resumes, lifecycle in getInfo', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000, metadata: { suite: 'pause' }, lifecycle: { onTimeout: 'pause', autoResume: true } });
    assert.deepEqual((await sbx.getInfo()).lifecycle, { onTimeout: 'pause', autoResume: true });
    assert.equal(await sbx.pause(), true);
    assert.equal(await sbx.pause(), false, 'already paused');
    assert.equal((await sbx.getInfo()).state, 'paused');
    const paused = await Sandbox.list({ query: { metadata: { suite: 'pause' }, state: ['paused'] } }).nextItems();
    assert.deepEqual(paused.map((s) => [s.sandboxId, s.state]), [[sbx.sandboxId, 'paused']]);
    assert.deepEqual(await Sandbox.list({ query: { metadata: { suite: 'pause' }, state: ['running'] } }).nextItems(), []);

    const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 });
    assert.equal(resumed.sandboxId, sbx.sandboxId);
    assert.equal((await resumed.getInfo()).state, 'running');
    const creates = cluster.calls.filter((c) => c.method === 'Create' && c.sandboxId === sbx.sandboxId);
    assert.equal(creates.length, 2);
    assert.ok(creates[1]!.snapshotId, 'resumed from its pause snapshot');

    await resumed.pause({ keepMemory: false });
    assert.equal(cluster.calls.filter((c) => c.method === 'Pause' && c.sandboxId === sbx.sandboxId).at(-1)?.memory, false);
    await Sandbox.connect(sbx.sandboxId, { onResume: 'reboot' });
    assert.equal(cluster.calls.filter((c) => c.method === 'Create' && c.sandboxId === sbx.sandboxId).at(-1)?.cold, true);
    assert.equal(await Sandbox.kill(sbx.sandboxId), true);
    await assert.rejects(Sandbox.pause(sbx.sandboxId), SandboxNotFoundError);
  });

  test('createSnapshot, listSnapshots, Sandbox.create from a snapshot, deleteSnapshot', async () => {
    const sbx = await Sandbox.create('base');
    const snap = await sbx.createSnapshot({ name: 'sdk-golden' });
    assert.deepEqual(snap.names, ['sdk-golden']);
    const listed = await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems();
    assert.deepEqual(listed, [{ snapshotId: snap.snapshotId, names: ['sdk-golden'] }]);
    const copy = await Sandbox.create(snap.snapshotId);
    assert.equal(cluster.calls.find((c) => c.method === 'Create' && c.sandboxId === copy.sandboxId)?.snapshotId, snap.snapshotId);
    const byName = await Sandbox.create('sdk-golden');
    assert.equal(cluster.calls.find((c) => c.method === 'Create' && c.sandboxId === byName.sandboxId)?.snapshotId, snap.snapshotId);
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true);
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false);
    assert.deepEqual(await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems(), []);
    for (const s of [sbx, copy, byName]) assert.equal(await s.kill(), true);
  });

  test('the concurrency limit surfaces as RateLimitError', async () => {
    const one = await Sandbox.create('base', { apiKey: limitedKey });
    await assert.rejects(Sandbox.create('base', { apiKey: limitedKey }), (err: unknown) => {
      assert.ok(err instanceof RateLimitError, String(err));
      assert.match((err as Error).message, /maximum number of concurrent E2B sandboxes \(1\)/);
      return true;
    });
    assert.equal(await Sandbox.kill(one.sandboxId, { apiKey: limitedKey }), true);
  });
});
