// Crash safety of pause (docs/pause-resume.md): the orchestrator is a real process killed with SIGKILL
// (1) at the worst moment — the sandbox's processes are dumped and gone, nothing is committed in cluster
// storage — and (2) at several moments during a pause that would succeed. After the restart the sandbox is
// always either running on the node or committed as a snapshot that resumes with its memory; never lost —
// also (3) when killed after a resume of a pause not yet committed had failed.

import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { NODE_ERROR_CODE_HEADER, NODE_RESTORE_FAILED } from '@cove/contracts/link';
import { checkpointPrereqs, hogScript } from './checkpoint-fixture.js';
import {
  exists,
  instance,
  nodeMetric,
  processClient,
  rpcClients,
  runInSandbox,
  spec,
  startChildOrchestrator,
  teardown,
  viaProxy,
  waitFor,
  type Child,
} from './orchestrator-fixture.js';

const I = instance('covtpc', 'tpc-', '10.216.0.0/16');
const STORAGE = '/var/tmp/cove-orch-test/pause-crash-storage';
const OBJECTS = join(STORAGE, 'objects');
const { skip } = await checkpointPrereqs();
const ENV = { COVE_STORAGE_URL: `file://${STORAGE}`, COVE_WARM_POOL: '' };

async function counterN(child: Child, sandboxId: string): Promise<{ n: number; mark: string } | null> {
  const r = await viaProxy(child.proxyUrl, sandboxId, 8080, '/counter').catch(() => null);
  if (!r || r.status !== 200) return null;
  const [n, , , mark] = r.body.trim().split(' ');
  return { n: Number(n), mark: mark ?? '' };
}

describe('pause survives kill -9 of the orchestrator', { timeout: 600_000, skip }, () => {
  const children: Child[] = [];
  const start = async (): Promise<Child> => {
    const c = await startChildOrchestrator(I, ENV);
    children.push(c);
    return c;
  };
  const kill9 = async (c: Child): Promise<void> => {
    c.proc.kill('SIGKILL');
    await c.exited;
  };

  before(async () => {
    await Promise.all([teardown(I), rm(STORAGE, { recursive: true, force: true })]);
    await mkdir(OBJECTS, { recursive: true });
  });

  after(async () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) await kill9(c);
    await teardown(I);
    await rm(STORAGE, { recursive: true, force: true });
  });

  async function busy(child: Child, sandboxId: string): Promise<void> {
    await rpcClients(child.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId, envdAccessToken: 'tok', envVars: { SBX: sandboxId } }, 600_000) });
    const hog = Buffer.from(hogScript(10)).toString('base64');
    const r = await runInSandbox(
      processClient(child.proxyUrl, sandboxId, 'tok'),
      `mkdir -p /tmp/www && echo ${hog} | base64 -d > /tmp/hog.py && (HOG_MARK=$SBX nohup python3 /tmp/hog.py >/dev/null 2>&1 &) && ` +
        `(nohup python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp/www >/dev/null 2>&1 &)`,
    );
    assert.equal(r.exitCode, 0);
    assert.ok(await waitFor(async () => ((await counterN(child, sandboxId))?.n ?? 0) > 3, 20_000), 'counter up');
  }

  it('killed after the pause answered with nothing committed: the restart commits it, the resume keeps memory', async () => {
    let child = await start();
    await busy(child, 'cr1');
    const before = (await counterN(child, 'cr1'))!;
    // Storage refuses the commit, so the pause stops right after the dump: processes gone, nothing in storage.
    await writeFile(join(OBJECTS, 'snapshots'), 'blocked');
    await rpcClients(child.rpcUrl).sandboxes.pause({ sandboxId: 'cr1', snapshotId: 'snap-cr1', memory: true });
    assert.equal(await counterN(child, 'cr1'), null, 'the sandbox is stopped');
    // Killed once storage has refused the commit: the node holds the only copy of the pause.
    assert.ok(await waitFor(async () => ((await nodeMetric(child.proxyUrl, 'cove_snapshot_commit_failures_total')) ?? 0) >= 1, 20_000), 'the commit was tried and refused');
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'snap-cr1', 'manifest.json')), false, 'nothing committed');
    await kill9(child);
    await rm(join(OBJECTS, 'snapshots'));

    child = await start();
    assert.ok(await waitFor(() => exists(join(OBJECTS, 'snapshots', 'snap-cr1', 'manifest.json')), 10_000), 'the restart committed the pause');
    const rpc = rpcClients(child.rpcUrl).sandboxes;
    assert.ok(!(await rpc.list({})).sandboxes.some((s) => s.sandboxId === 'cr1'), 'paused, so not running here');
    const again = await rpc.pause({ sandboxId: 'cr1', snapshotId: 'snap-cr1', memory: true });
    assert.equal(again.snapshot?.snapshotId, 'snap-cr1', 'the control plane\'s retry of the pause answers OK');
    await rpc.create({ sandbox: spec({ sandboxId: 'cr1', snapshotId: 'snap-cr1', envdAccessToken: 'tok' }) });
    const after = await counterN(child, 'cr1');
    assert.ok(after && after.n >= before.n && after.mark === 'cr1', `resumed with its memory (${before.n} → ${after?.n})`);
    await rpc.delete({ sandboxId: 'cr1' });
    await kill9(child);
  });

  it('killed after a resume of an uncommitted pause failed: nothing was given up, the restart commits it, it resumes with memory', async () => {
    let child = await start();
    await busy(child, 'cr2');
    const before = (await counterN(child, 'cr2'))!;
    await rm(join(OBJECTS, 'snapshots'), { recursive: true, force: true });
    await writeFile(join(OBJECTS, 'snapshots'), 'blocked');
    let rpc = rpcClients(child.rpcUrl).sandboxes;
    await rpc.pause({ sandboxId: 'cr2', snapshotId: 'snap-cr2', memory: true });
    // The resume cannot succeed (a damaged image file) and storage is down: a clear answer, nothing given up.
    const inventory = join(I.dataDir, 'snapshots', 'snap-cr2', 'images', 'inventory.img');
    const good = await readFile(inventory);
    await writeFile(inventory, 'damaged');
    const failed = await rpc.create({ sandbox: spec({ sandboxId: 'cr2', snapshotId: 'snap-cr2', envdAccessToken: 'tok' }) }).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    assert.ok(failed, 'the resume failed');
    assert.equal(failed.code, Code.Aborted);
    assert.equal(failed.metadata.get(NODE_ERROR_CODE_HEADER), NODE_RESTORE_FAILED);
    await kill9(child);
    await writeFile(inventory, good);
    await rm(join(OBJECTS, 'snapshots'));

    child = await start();
    assert.ok(await waitFor(() => exists(join(OBJECTS, 'snapshots', 'snap-cr2', 'manifest.json')), 15_000), 'the restart committed the pause');
    rpc = rpcClients(child.rpcUrl).sandboxes;
    await rpc.create({ sandbox: spec({ sandboxId: 'cr2', snapshotId: 'snap-cr2', envdAccessToken: 'tok' }) });
    const after = await counterN(child, 'cr2');
    assert.ok(after && after.n >= before.n && after.mark === 'cr2', `resumed with its memory (${before.n} → ${after?.n})`);
    await rpc.delete({ sandboxId: 'cr2' });
    await kill9(child);
  });

  it('killed at any moment of a pause: afterwards the sandbox runs or is a complete snapshot', async () => {
    const outcomes: string[] = [];
    for (const delayMs of [0, 60, 120, 200, 300, 450]) {
      let child = await start();
      const id = `cr${delayMs}`;
      await busy(child, id);
      const pausing = rpcClients(child.rpcUrl).sandboxes.pause({ sandboxId: id, snapshotId: `snap-${id}`, memory: true }).catch(() => undefined);
      await sleep(delayMs);
      await kill9(child);
      await pausing;

      child = await start();
      const rpc = rpcClients(child.rpcUrl).sandboxes;
      const running = (await rpc.list({})).sandboxes.some((s) => s.sandboxId === id);
      const committed = !running && (await waitFor(() => exists(join(OBJECTS, 'snapshots', `snap-${id}`, 'manifest.json')), 10_000));
      assert.ok(running !== committed, `after a kill at ${delayMs} ms: running=${running}, committed=${committed} (exactly one)`);
      if (running) assert.equal(await exists(join(OBJECTS, 'snapshots', `snap-${id}`, 'manifest.json')), false);
      if (!running) await rpc.create({ sandbox: spec({ sandboxId: id, snapshotId: `snap-${id}`, envdAccessToken: 'tok' }) });
      assert.ok(await waitFor(async () => (await counterN(child, id))?.mark === id, 10_000), `the sandbox answers after a kill at ${delayMs} ms`);
      const cmd = await runInSandbox(processClient(child.proxyUrl, id, 'tok'), 'echo $SBX');
      assert.equal(cmd.stdout.trim(), id);
      outcomes.push(`${delayMs} ms: ${running ? 'running' : 'paused'}`);
      await rpc.delete({ sandboxId: id });
      await kill9(child);
    }
    console.log(`kill -9 during pause → ${outcomes.join(', ')}`);
  });
});
