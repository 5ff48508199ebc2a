// The orchestrator's RPC and node proxy end to end: a real orchestrator from app.ts with the real Linux
// runtime and the real envd bundle, driven by generated gRPC clients, sandbox traffic through the node proxy.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError } from '@connectrpc/connect';
import { NodeStatus } from '@cove/contracts/orchestrator';
import {
  instance,
  processClient,
  recordOf,
  rpcClients,
  runInSandbox,
  slotTraces,
  spec,
  startOrchestrator,
  teardown,
  viaProxy,
  waitFor,
  type Running,
} from './orchestrator-fixture.js';

const I = instance('covtrpc', 'ctr-', '10.236.0.0/16');

/** A slot's CPU weight as the kernel holds it, in cpu.shares units (v2's cpu.weight scaled: 100 → 1024). */
async function cpuShares(slotId: string): Promise<number> {
  const v1 = await readFile(`/sys/fs/cgroup/cpu/${I.instance}/${slotId}/cpu.shares`, 'utf8').catch(() => null);
  if (v1 !== null) return Number(v1);
  return Math.round((Number(await readFile(`/sys/fs/cgroup/${I.instance}/${slotId}/cpu.weight`, 'utf8')) * 1024) / 100);
}

async function code(p: Promise<unknown>): Promise<Code> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err).code;
  }
  assert.fail('expected the call to fail');
}

describe('orchestrator RPC', () => {
  let node: Running;
  let rpc: ReturnType<typeof rpcClients>;

  before(async () => {
    await teardown(I);
    // Memory overcommit 1: a sandbox given all of the node's memory fills it (ResourceExhausted test).
    node = await startOrchestrator(I, { COVE_MEMORY_OVERCOMMIT: '1' });
    rpc = rpcClients(node.rpcUrl);
  });

  after(async () => {
    await node?.close();
    await teardown(I);
  });

  const warmReady = async (): Promise<boolean> => {
    const info = await rpc.info.info({});
    return (info.warmPools.find((p) => p.templateId === 'base')?.ready ?? 0) >= 1;
  };

  it('requires the node token on every call', async () => {
    const none = rpcClients(node.rpcUrl, null);
    const wrong = rpcClients(node.rpcUrl, 'not-the-node-token');
    assert.equal(await code(none.info.info({})), Code.Unauthenticated);
    assert.equal(await code(none.sandboxes.list({})), Code.Unauthenticated);
    assert.equal(await code(wrong.info.info({})), Code.PermissionDenied);
    assert.equal(await code(wrong.sandboxes.create({ sandbox: spec({ sandboxId: 'auth1' }) })), Code.PermissionDenied);
    assert.equal(await code(wrong.info.setStatus({ status: NodeStatus.DRAINING })), Code.PermissionDenied);
    assert.equal((await rpc.info.info({})).status, NodeStatus.HEALTHY);
  });

  it('reports node info', async () => {
    const info = await rpc.info.info({});
    assert.equal(info.nodeId, `node-${I.instance}`);
    assert.match(info.version, /^\d+\.\d+\.\d+/);
    assert.deepEqual(info.roles, ['orchestrator']);
    assert.ok(info.capacity!.cpuCount >= 1);
    assert.ok(info.capacity!.memoryBytes > 0n);
    assert.ok(info.capacity!.diskBytes > 0n);
    assert.ok(info.usage!.memoryUsedBytes > 0n);
    assert.ok(info.startedAt);
    assert.match(info.proxyAddress, /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(
      info.warmPools.map((p) => [p.templateId, p.target]),
      [['base', 1]],
    );
  });

  it('rejects bad input on every field with InvalidArgument', async () => {
    const now = Date.now();
    const bad = [
      spec({ sandboxId: '' }),
      spec({ sandboxId: 'UPPER' }),
      spec({ sandboxId: '-lead' }),
      spec({ sandboxId: 'a'.repeat(64) }),
      spec({ sandboxId: 'ok1', templateId: '' }),
      spec({ sandboxId: 'ok1', templateId: '../etc' }),
      spec({ sandboxId: 'ok1', vcpu: 0 }),
      spec({ sandboxId: 'ok1', vcpu: 10_000 }),
      spec({ sandboxId: 'ok1', memoryMb: 64 }),
      spec({ sandboxId: 'ok1', memoryMb: 100_000_000 }),
      spec({ sandboxId: 'ok1', diskMb: 10 }),
      spec({ sandboxId: 'ok1', endTime: timestampFromMs(now - 1000) }),
      spec({ sandboxId: 'ok1', endTime: undefined }),
      spec({ sandboxId: 'ok1', envVars: { 'BAD-NAME': 'x' } }),
      spec({ sandboxId: 'ok1', envVars: { '1X': 'x' } }),
      spec({ sandboxId: 'ok1', envVars: { GOOD: 'nul\0' } }),
    ];
    for (const s of bad) {
      assert.equal(await code(rpc.sandboxes.create({ sandbox: s })), Code.InvalidArgument, JSON.stringify(s, (_k, v) => (typeof v === 'bigint' ? String(v) : v)));
    }
    assert.equal(await code(rpc.sandboxes.create({})), Code.InvalidArgument);
    assert.equal(await code(rpc.sandboxes.delete({ sandboxId: 'Bad Id' })), Code.InvalidArgument);
    assert.equal(await code(rpc.sandboxes.update({ sandboxId: 'nosuch' })), Code.InvalidArgument);
    assert.equal(await code(rpc.info.setStatus({ status: NodeStatus.UNSPECIFIED })), Code.InvalidArgument);
    assert.equal((await rpc.sandboxes.list({})).sandboxes.length, 0);
  });

  it('answers NotFound for an unknown template, sandbox, update or delete', async () => {
    assert.equal(await code(rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tpl1', templateId: 'no-such-template' }) })), Code.NotFound);
    assert.equal(await code(rpc.sandboxes.delete({ sandboxId: 'nosuch' })), Code.NotFound);
    assert.equal(await code(rpc.sandboxes.update({ sandboxId: 'nosuch', endTime: timestampFromMs(Date.now() + 60_000) })), Code.NotFound);
  });

  it('creates from the warm pool, runs a command through the node proxy, updates, lists and deletes', async () => {
    assert.ok(await waitFor(warmReady, 120_000, 200), 'warm pool never filled');
    const accessToken = 'sandbox-access-token-abc123';
    const res = await rpc.sandboxes.create({
      sandbox: spec({
        sandboxId: 'happy1',
        envVars: { COVE_TEST_VAR: 'hello-from-create' },
        envdAccessToken: accessToken,
        metadata: { owner: 'tests' },
        teamId: 'team-1',
      }),
    });
    assert.equal(res.warmPoolHit, true);
    const sbx = res.sandbox!;
    assert.equal(sbx.sandboxId, 'happy1');
    assert.notEqual(sbx.envdVersion, '');
    assert.match(sbx.address, /^10\.236\./);
    assert.deepEqual(sbx.metadata, { owner: 'tests' });

    assert.equal(await code(rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'happy1' }) })), Code.AlreadyExists);

    const health = await viaProxy(node.proxyUrl, 'happy1', 49983, '/health');
    assert.equal(health.status, 204);
    const proc = processClient(node.proxyUrl, 'happy1', accessToken);
    const out = await runInSandbox(proc, 'echo "$COVE_TEST_VAR $(whoami) $(hostname) $PWD"');
    assert.equal(out.exitCode, 0);
    assert.equal(out.stdout.trim(), 'hello-from-create user happy1 /home/user');
    // The access token is enforced by envd behind the proxy.
    assert.equal(await code(runInSandbox(processClient(node.proxyUrl, 'happy1', 'wrong-token'), 'true')), Code.Unauthenticated);

    const later = Date.now() + 3_600_000;
    const upd = await rpc.sandboxes.update({ sandboxId: 'happy1', endTime: timestampFromMs(later) });
    assert.equal(timestampMs(upd.sandbox!.endTime!), later);
    const listed = (await rpc.sandboxes.list({})).sandboxes;
    assert.deepEqual(listed.map((s) => s.sandboxId), ['happy1']);
    assert.equal(timestampMs(listed[0]!.endTime!), later);
    const info = await rpc.info.info({});
    assert.equal(info.sandboxCount, 1);
    assert.equal(info.usage!.cpuAllocated, 1);
    assert.equal(info.usage!.memoryAllocatedBytes, 256n * 1024n * 1024n);
    // Per-sandbox usage from the slot's cgroup (sampled every 5 s; sample now rather than wait).
    await node.orchestrator.usage.sample();
    const usage = (await rpc.info.info({})).sandboxUsage.find((u) => u.sandboxId === 'happy1');
    assert.ok(usage, 'no usage sample for happy1');
    assert.ok(usage.memoryUsedBytes > 0n);
    assert.ok(usage.pids >= 1);
    assert.ok(usage.cpuPercent >= 0 && usage.cpuPercent <= 100);

    const { slotId } = await recordOf(I, 'happy1');
    await rpc.sandboxes.delete({ sandboxId: 'happy1', reason: 'test' });
    assert.deepEqual(await slotTraces(I, slotId), []);
    assert.equal((await rpc.sandboxes.list({})).sandboxes.length, 0);
    assert.equal(await code(rpc.sandboxes.delete({ sandboxId: 'happy1' })), Code.NotFound);
    const gone = await viaProxy(node.proxyUrl, 'happy1', 49983, '/health');
    assert.equal(gone.status, 502);
    assert.deepEqual(JSON.parse(gone.body), { message: 'The sandbox was not found', sandboxId: 'happy1', code: 502 });
  });

  it('boots warm slots at a low CPU weight and gives a claimed one the full weight before the Create answers', async () => {
    assert.ok(await waitFor(warmReady, 120_000, 200), 'warm pool never filled');
    const [pooled] = await node.runtime.listSlots();
    assert.ok(pooled);
    assert.equal(await cpuShares(pooled.slotId), 128, 'a waiting warm slot runs at an eighth of the weight');
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'weight1' }) });
    const { slotId } = await recordOf(I, 'weight1');
    assert.equal(slotId, pooled.slotId, 'the Create took the warm slot');
    assert.equal(await cpuShares(slotId), 1024);
    // The refill the take started boots low again.
    assert.ok(await waitFor(warmReady, 120_000, 200), 'warm pool never refilled');
    const refill = (await node.runtime.listSlots()).find((s) => s.slotId !== slotId);
    assert.ok(refill);
    assert.equal(await cpuShares(refill.slotId), 128);
    await rpc.sandboxes.delete({ sandboxId: 'weight1' });
  });

  it('boots a fresh sandbox when no warm slot fits (warm pool miss)', async () => {
    const res = await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'miss1', diskMb: 512 }) });
    assert.equal(res.warmPoolHit, false);
    assert.equal(await cpuShares((await recordOf(I, 'miss1')).slotId), 1024, 'a Create\'s own boot runs at the full weight');
    assert.equal((await viaProxy(node.proxyUrl, 'miss1', 49983, '/health')).status, 204);
    await rpc.sandboxes.delete({ sandboxId: 'miss1' });
  });

  it('falls back to a fresh boot when the warm slot died while waiting', async () => {
    assert.ok(await waitFor(warmReady, 120_000, 200), 'warm pool never filled');
    const slots = await node.runtime.listSlots();
    assert.equal(slots.length, 1, 'expected exactly the one warm slot');
    process.kill(slots[0]!.pid, 'SIGKILL');
    const res = await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'fallback1' }) });
    assert.equal(res.warmPoolHit, false);
    assert.equal((await viaProxy(node.proxyUrl, 'fallback1', 49983, '/health')).status, 204);
    assert.deepEqual(await slotTraces(I, slots[0]!.slotId), []);
    await rpc.sandboxes.delete({ sandboxId: 'fallback1' });
  });

  it('node proxy: auth, internal paths, closed ports, streaming', async () => {
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'proxy1', envdAccessToken: 'tok-proxy1' }) });
    const noToken = await viaProxy(node.proxyUrl, 'proxy1', 49983, '/health', { token: 'wrong' });
    assert.equal(noToken.status, 401);
    for (const path of ['/init', '/metrics']) {
      const r = await viaProxy(node.proxyUrl, 'proxy1', 49983, path, { method: path === '/init' ? 'POST' : 'GET' });
      assert.equal(r.status, 404, path);
      assert.equal(JSON.parse(r.body).code, 404);
    }
    const closed = await viaProxy(node.proxyUrl, 'proxy1', 8080, '/');
    assert.equal(closed.status, 502);
    assert.deepEqual(JSON.parse(closed.body), {
      message: 'The sandbox is running but port is not open',
      sandboxId: 'proxy1',
      port: 8080,
      code: 502,
    });
    // A server-streamed process output arrives through the proxy chunk by chunk, then the port opens.
    const proc = processClient(node.proxyUrl, 'proxy1', 'tok-proxy1');
    const out = await runInSandbox(proc, 'for i in 1 2 3; do echo line$i; sleep 0.1; done');
    assert.equal(out.stdout, 'line1\nline2\nline3\n');
    const server = (async () => {
      for await (const _ of proc.start({ process: { cmd: '/usr/bin/python3', args: ['-m', 'http.server', '8080', '--bind', '0.0.0.0'], envs: {}, cwd: '/tmp' } })) {
        // runs until the sandbox is deleted
      }
    })().catch(() => undefined);
    assert.ok(
      await waitFor(async () => (await viaProxy(node.proxyUrl, 'proxy1', 8080, '/')).status === 200, 20_000, 100),
      'port 8080 never answered through the proxy',
    );
    await rpc.sandboxes.delete({ sandboxId: 'proxy1' });
    await server;
  });

  it('concurrent Creates: distinct ids all start, a duplicate id starts once', async () => {
    const ids = ['conc1', 'conc2', 'conc3'];
    const results = await Promise.allSettled([
      ...ids.map((sandboxId) => rpc.sandboxes.create({ sandbox: spec({ sandboxId }) })),
      rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'dup1' }) }),
      rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'dup1' }) }),
    ]);
    assert.deepEqual(results.slice(0, 3).map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled']);
    const dups = results.slice(3);
    assert.equal(dups.filter((r) => r.status === 'fulfilled').length, 1);
    const rejected = dups.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.equal(ConnectError.from(rejected.reason).code, Code.AlreadyExists);
    const listed = (await rpc.sandboxes.list({})).sandboxes.map((s) => s.sandboxId).sort();
    assert.deepEqual(listed, [...ids, 'dup1'].sort());
    const addresses = new Set((await rpc.sandboxes.list({})).sandboxes.map((s) => s.address));
    assert.equal(addresses.size, 4, 'two sandboxes share an address');
    for (const id of listed) assert.equal((await viaProxy(node.proxyUrl, id, 49983, '/health')).status, 204, id);
    await Promise.all(listed.map((sandboxId) => rpc.sandboxes.delete({ sandboxId })));
    assert.equal((await rpc.sandboxes.list({})).sandboxes.length, 0);
  });

  it('a Delete during the same id\'s Create waits for it and deletes what it started (no sandbox left unknown)', async () => {
    // A fresh boot (no warm slot of this disk size): the Delete arrives while it runs, as a control plane's does
    // after its Create timed out.
    const creating = rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'late1', diskMb: 512 }) });
    await rpc.sandboxes.delete({ sandboxId: 'late1', reason: 'create failed' });
    const res = await creating;
    assert.equal(res.sandbox?.sandboxId, 'late1', 'the Create itself still answers');
    assert.deepEqual((await rpc.sandboxes.list({})).sandboxes.map((s) => s.sandboxId), []);
    assert.equal(await code(rpc.sandboxes.delete({ sandboxId: 'late1' })), Code.NotFound, 'and it is gone');
  });

  it('kills a sandbox at its end time without being asked', async () => {
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'expire1' }, 3_000) });
    const { slotId } = await recordOf(I, 'expire1');
    assert.ok(
      await waitFor(async () => (await rpc.sandboxes.list({})).sandboxes.length === 0, 30_000, 100),
      'sandbox outlived its end time',
    );
    assert.ok(await waitFor(async () => (await slotTraces(I, slotId)).length === 0, 10_000, 100));
  });

  it('moving the end time into the past kills the sandbox', async () => {
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'expire2' }) });
    await rpc.sandboxes.update({ sandboxId: 'expire2', endTime: timestampFromMs(Date.now() - 1) });
    assert.ok(await waitFor(async () => (await rpc.sandboxes.list({})).sandboxes.length === 0, 30_000, 100));
  });

  it('draining stops new sandboxes; healthy resumes; a full node says ResourceExhausted', async () => {
    assert.equal((await rpc.info.setStatus({ status: NodeStatus.DRAINING })).status, NodeStatus.DRAINING);
    assert.equal((await rpc.info.info({})).status, NodeStatus.DRAINING);
    assert.equal(await code(rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'drain1' }) })), Code.ResourceExhausted);
    assert.equal((await rpc.info.setStatus({ status: NodeStatus.HEALTHY })).status, NodeStatus.HEALTHY);

    // A memory limit is a ceiling, not a reservation of host pages: a sandbox may be given all of it.
    const memoryMb = Number((await rpc.info.info({})).capacity!.memoryBytes / 1024n / 1024n);
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'full1', memoryMb }) });
    assert.equal(await code(rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'full2', memoryMb: 128 }) })), Code.ResourceExhausted);
    await rpc.sandboxes.delete({ sandboxId: 'full1' });
  });
});
