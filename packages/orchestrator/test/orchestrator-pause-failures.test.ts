// Failed steps of pause and resume with real failures injected into a real node (docs/pause-resume.md,
// "Invariant"): cluster storage refusing writes (a file where its snapshots dir must go; root ignores modes), a
// paused slot whose disk is gone (its overlay unmounted), a damaged CRIU image file. Until a snapshot is
// committed the node keeps what committing it takes; a failed in-place restore falls back to the node's own files
// or to storage's copy; a resume that cannot succeed answers snapshot_restore_failed in seconds and the sandbox
// stays paused and resumable.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { NODE_ERROR_CODE_HEADER, NODE_RESTORE_FAILED } from '@cove/contracts/link';
import { checkpointPrereqs, hogScript } from './checkpoint-fixture.js';
import {
  exists,
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

const pexec = promisify(execFile);
const I = instance('covtpf', 'tpf-', '10.217.0.0/16');
const STORAGE = '/var/tmp/cove-orch-test/pause-failures-storage';
const OBJECTS = join(STORAGE, 'objects');
const { skip } = await checkpointPrereqs();

async function counter(node: Running, sandboxId: string): Promise<{ n: number; digest: string; mark: string } | null> {
  const r = await viaProxy(node.proxyUrl, sandboxId, 8080, '/counter').catch(() => null);
  if (!r || r.status !== 200) return null;
  const [n, digest, , mark] = r.body.trim().split(' ');
  return { n: Number(n), digest: digest ?? '', mark: mark ?? '' };
}

/** Storage refuses every snapshot manifest write until unblocked. */
async function blockStorage(): Promise<void> {
  await rm(join(OBJECTS, 'snapshots'), { recursive: true, force: true });
  await mkdir(OBJECTS, { recursive: true });
  await writeFile(join(OBJECTS, 'snapshots'), 'blocked');
}

async function unblockStorage(): Promise<void> {
  await rm(join(OBJECTS, 'snapshots'), { force: true });
}

interface NodeLogLine {
  time: number;
  msg: string;
  snapshotId?: string;
  attempt?: number;
  retryInMs?: number;
}

describe('pause and resume when steps fail', { timeout: 300_000, skip }, () => {
  let a: Running;
  const logged: NodeLogLine[] = [];

  before(async () => {
    await Promise.all([teardown(I), rm(STORAGE, { recursive: true, force: true })]);
    await mkdir(OBJECTS, { recursive: true });
    // The node's own account of its commit attempts (their delays) is what the commit-wait test holds it to.
    a = await startOrchestrator(I, { COVE_STORAGE_URL: `file://${STORAGE}`, COVE_WARM_POOL: '', COVE_LOG_LEVEL: 'info' }, {}, undefined, {
      write: (line: string) => void logged.push(JSON.parse(line) as NodeLogLine),
    });
  });

  after(async () => {
    await a?.close();
    await teardown(I);
    await rm(STORAGE, { recursive: true, force: true });
  });

  async function busySandbox(sandboxId: string): Promise<{ n: number; digest: string; mark: string }> {
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId, envdAccessToken: `tok-${sandboxId}` }) });
    const hog = Buffer.from(hogScript(8)).toString('base64');
    const r = await runInSandbox(
      processClient(a.proxyUrl, sandboxId, `tok-${sandboxId}`),
      `mkdir -p /tmp/www && echo ${hog} | base64 -d > /tmp/hog.py && (HOG_MARK=${sandboxId} nohup python3 /tmp/hog.py >/dev/null 2>&1 &) && ` +
        `(nohup python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp/www >/dev/null 2>&1 &)`,
    );
    assert.equal(r.exitCode, 0);
    assert.ok(await waitFor(async () => ((await counter(a, sandboxId))?.n ?? 0) > 3, 20_000), 'counter and http server up');
    return (await counter(a, sandboxId))!;
  }

  const images = (snapshotId: string): string => join(I.dataDir, 'snapshots', snapshotId, 'images');

  it('an uncommitted pause whose slot cannot be restored in place resumes from the node\'s own files', async () => {
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    const was = await busySandbox('pf1');
    const address = (await rpc.list({})).sandboxes.find((s) => s.sandboxId === 'pf1')!.address;
    await blockStorage();
    await rpc.pause({ sandboxId: 'pf1', snapshotId: 'snap-pf1', memory: true });
    const { slotId } = await recordOf(I, 'pf1');
    // The paused slot's disk goes away under it: CRIU has no root to restore onto.
    await pexec('umount', ['-l', join(I.dataDir, 'slots', slotId, 'rootfs')]);
    const t0 = Date.now();
    const res = await rpc.create({ sandbox: spec({ sandboxId: 'pf1', snapshotId: 'snap-pf1', envdAccessToken: 'tok-pf1' }) });
    console.log(`resume after a failed restore in place, from the node's own files: ${Date.now() - t0} ms`);
    assert.notEqual(res.sandbox?.address, address, 'in a new slot');
    const now = await counter(a, 'pf1');
    assert.ok(now && now.mark === 'pf1' && now.digest === was.digest && now.n >= was.n, 'its processes and memory came back in a new slot');
    // Nothing was given up before the snapshot is dealt with: the paused slot stays until the snapshot is deleted.
    assert.ok((await slotTraces(I, slotId)).includes('slot dir'), 'the paused slot is kept while its snapshot is uncommitted');
    await unblockStorage();
    await rpc.deleteSnapshots({ snapshotIds: ['snap-pf1'] });
    assert.deepEqual(await slotTraces(I, slotId), [], 'the paused slot goes with its snapshot');
    assert.equal((await counter(a, 'pf1'))?.mark, 'pf1', 'the resumed sandbox is untouched');
    await rpc.delete({ sandboxId: 'pf1' });
  });

  it('a resume that cannot succeed answers snapshot_restore_failed in seconds; the sandbox stays paused, is committed, and resumes later', async () => {
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    const was = await busySandbox('pf2');
    const address = (await rpc.list({})).sandboxes.find((s) => s.sandboxId === 'pf2')!.address;
    await blockStorage();
    await rpc.pause({ sandboxId: 'pf2', snapshotId: 'snap-pf2', memory: true });
    const { slotId } = await recordOf(I, 'pf2');
    const inventory = join(images('snap-pf2'), 'inventory.img');
    await copyFile(inventory, `${I.dataDir}/inventory.keep`);
    await writeFile(inventory, 'damaged');
    const t0 = Date.now();
    // Not DATA_LOSS ("corrupt"): CRIU could not restore these files here, which a node's own limits do as well.
    const refused = await rpc.create({ sandbox: spec({ sandboxId: 'pf2', snapshotId: 'snap-pf2', envdAccessToken: 'tok-pf2' }) }).then(
      () => assert.fail('the resume started'),
      (err: unknown) => ConnectError.from(err),
    );
    assert.equal(refused.code, Code.Aborted);
    assert.equal(refused.metadata.get(NODE_ERROR_CODE_HEADER), NODE_RESTORE_FAILED);
    assert.match(refused.rawMessage, /snapshot snap-pf2 could not be restored on this node/);
    const failMs = Date.now() - t0;
    assert.ok(failMs < 15_000, `answered in ${failMs} ms`);
    console.log(`a resume that cannot succeed answered snapshot_restore_failed in ${failMs} ms`);
    assert.ok(!(await rpc.list({})).sandboxes.some((s) => s.sandboxId === 'pf2'), 'not running');
    assert.equal((await recordOf(I, 'pf2') as { pausing?: { snapshotId: string } }).pausing?.snapshotId, 'snap-pf2', 'its pause intent is kept');
    assert.ok((await slotTraces(I, slotId)).includes('slot dir'), 'its slot is kept');
    // Waiting for the commit is bounded too: storage is still down and had refused the commit already, so the
    // repeated Pause answers with the outcome of the attempt it started, not after the whole commit wait.
    const waited = await rpc.pause({ sandboxId: 'pf2', snapshotId: 'snap-pf2', memory: true }).then(
      () => assert.fail('the pause committed'),
      (err: unknown) => ConnectError.from(err),
    );
    assert.equal(waited.code, Code.FailedPrecondition);
    assert.match(waited.rawMessage, /snap-pf2 is not committed: cluster storage refused it \(.+\)/);
    // The files are whole again and storage is back: the commit goes through (the slot record it needed is the
    // intent's), and the sandbox resumes in place with its memory.
    await copyFile(`${I.dataDir}/inventory.keep`, inventory);
    await unblockStorage();
    const committed = await rpc.pause({ sandboxId: 'pf2', snapshotId: 'snap-pf2', memory: true });
    assert.equal(committed.snapshot?.snapshotId, 'snap-pf2');
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'snap-pf2', 'manifest.json')), true);
    const res = await rpc.create({ sandbox: spec({ sandboxId: 'pf2', snapshotId: 'snap-pf2', envdAccessToken: 'tok-pf2' }) });
    assert.equal(res.sandbox?.address, address, 'in place');
    const now = await counter(a, 'pf2');
    assert.ok(now && now.mark === 'pf2' && now.digest === was.digest, 'with its memory');
    await rpc.deleteSnapshots({ snapshotIds: ['snap-pf2'] });
    await rpc.delete({ sandboxId: 'pf2' });
  });

  it('deleting an uncommitted snapshot does not wait out its commit job\'s retry delay', async () => {
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    await rpc.create({ sandbox: spec({ sandboxId: 'pf4', envdAccessToken: 'tok-pf4' }) });
    await blockStorage();
    await rpc.pause({ sandboxId: 'pf4', snapshotId: 'snap-pf4', memory: true });
    // The third refused attempt: the job now waits 5 s before its next one.
    const retrying = (): NodeLogLine | undefined =>
      logged.find((l) => l.snapshotId === 'snap-pf4' && l.msg === 'committing the snapshot failed; retrying' && l.attempt === 2);
    assert.ok(await waitFor(async () => retrying() !== undefined, 20_000), 'storage refused the commit three times');
    const { time, retryInMs } = retrying()!;
    assert.ok((retryInMs ?? 0) >= 2000, `a delay long enough to tell a wake from its end: ${retryInMs} ms`);
    await unblockStorage();
    await rpc.deleteSnapshots({ snapshotIds: ['snap-pf4'] });
    const answered = Date.now();
    // Without the wake, the job would see the delete only once its delay ran out, and the delete waits for the job.
    assert.ok(answered < time + retryInMs!, `deleted ${answered - time} ms after the refusal whose retry was due in ${retryInMs} ms`);
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'snap-pf4', 'manifest.json')), false, 'never committed');
    assert.ok(!logged.some((l) => l.snapshotId === 'snap-pf4' && l.msg === 'snapshot committed'));
  });

  it('a committed pause whose local image is damaged resumes from cluster storage\'s verified copy', async () => {
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    const was = await busySandbox('pf3');
    await rpc.pause({ sandboxId: 'pf3', snapshotId: 'snap-pf3', memory: true });
    await rpc.pause({ sandboxId: 'pf3', snapshotId: 'snap-pf3', memory: true });
    const inventory = join(images('snap-pf3'), 'inventory.img');
    const good = await readFile(inventory);
    await writeFile(inventory, 'damaged');
    const t0 = Date.now();
    await rpc.create({ sandbox: spec({ sandboxId: 'pf3', snapshotId: 'snap-pf3', envdAccessToken: 'tok-pf3' }) });
    console.log(`resume after a failed restore in place, from storage's copy: ${Date.now() - t0} ms`);
    const now = await counter(a, 'pf3');
    assert.ok(now && now.mark === 'pf3' && now.digest === was.digest, 'its processes and memory came back from storage');
    assert.deepEqual(await readFile(inventory), good, 'the local copy is storage\'s again');
    await rpc.deleteSnapshots({ snapshotIds: ['snap-pf3'] });
    await rpc.delete({ sandboxId: 'pf3' });
  });
});
