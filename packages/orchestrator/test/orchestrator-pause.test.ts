// Pause, resume and snapshots through the orchestrator's RPC, with two real nodes (own runtimes, data dirs,
// subnets) sharing one cluster storage: a sandbox paused on node A resumes on node B with its processes,
// memory, cwd, env and files, and its http server answers through B's proxy; a resume on the pausing node
// restores in place; memory:false reboots; persistent snapshots start new sandboxes; bad input and missing or
// corrupt snapshots get the documented codes; a pause whose commit fails is finished by a repeated Pause; a pause
// that finds the node's disk full fails and leaves the sandbox running.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Code } from '@connectrpc/connect';
import { signDocument } from '@cove/storage';
import { checkpointPrereqs, hogScript } from './checkpoint-fixture.js';
import {
  exists,
  instance,
  nodeMetric,
  rpcOutcome,
  processClient,
  rpcClients,
  runInSandbox,
  spec,
  startNodePair,
  stopNodePair,
  viaProxy,
  waitFor,
  type Running,
} from './orchestrator-fixture.js';

const A = instance('covtp1', 'tp1-', '10.214.0.0/16');
const B = instance('covtp2', 'tp2-', '10.215.0.0/16');
const STORAGE = '/var/tmp/cove-orch-test/pause-storage';
/** The local driver keeps objects under objects/<key>. */
const OBJECTS = join(STORAGE, 'objects');
const { skip } = await checkpointPrereqs();

async function counter(node: Running, sandboxId: string): Promise<{ n: number; digest: string; cwd: string; mark: string } | null> {
  const r = await viaProxy(node.proxyUrl, sandboxId, 8080, '/counter').catch(() => null);
  if (!r || r.status !== 200) return null;
  const [n, digest, cwd, mark] = r.body.trim().split(' ');
  return { n: Number(n), digest: digest ?? '', cwd: cwd ?? '', mark: mark ?? '' };
}

describe('pause and resume across two orchestrators', { timeout: 300_000, skip }, () => {
  let a: Running;
  let b: Running;
  const env = { COVE_STORAGE_URL: `file://${STORAGE}`, COVE_WARM_POOL: 'base=1', COVE_LOCAL_SNAPSHOTS: '1' };

  before(async () => {
    [a, b] = await startNodePair([A, B], STORAGE, env);
  });

  after(async () => {
    await stopNodePair([a, b], [A, B], STORAGE);
  });

  /** A sandbox on `node` running the counter (python, ~20 MB) and an http server, started through envd. */
  async function busySandbox(node: Running, sandboxId: string): Promise<void> {
    await rpcClients(node.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId, envdAccessToken: `tok-${sandboxId}`, envVars: { SBX: sandboxId } }) });
    const p = processClient(node.proxyUrl, sandboxId, `tok-${sandboxId}`);
    const hog = Buffer.from(hogScript(20)).toString('base64');
    const r = await runInSandbox(
      p,
      `mkdir -p /tmp/www /home/user/work && echo ${hog} | base64 -d > /tmp/hog.py && echo kept > /home/user/work/note && ` +
        `cd /home/user/work && (HOG_MARK=$SBX nohup python3 /tmp/hog.py >/dev/null 2>&1 &) && ` +
        `(nohup python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp/www >/dev/null 2>&1 &)`,
    );
    assert.equal(r.exitCode, 0);
    assert.ok(await waitFor(async () => ((await counter(node, sandboxId))?.n ?? 0) > 3, 20_000), 'counter and http server up');
  }

  it('pauses on A and resumes on B: processes, memory, cwd, env, files and the http server come back', async () => {
    await busySandbox(a, 'pz1');
    const before = (await counter(a, 'pz1'))!;
    const started = Date.now();
    const paused = await rpcClients(a.rpcUrl).sandboxes.pause({ sandboxId: 'pz1', snapshotId: 'snap-pz1', memory: true });
    const pauseMs = Date.now() - started;
    assert.equal(paused.snapshot?.snapshotId, 'snap-pz1');
    assert.equal(paused.snapshot?.memory, true);
    assert.ok(Number(paused.snapshot?.sizeBytes) > 20 * 1024 * 1024, 'the memory image is in the snapshot');
    assert.ok(!(await rpcClients(a.rpcUrl).sandboxes.list({})).sandboxes.some((s) => s.sandboxId === 'pz1'), 'off node A');
    assert.equal((await viaProxy(a.proxyUrl, 'pz1', 8080, '/counter')).status, 502);
    // Idempotent: the same pause again answers OK; the sandbox is not paused twice.
    const again = await rpcClients(a.rpcUrl).sandboxes.pause({ sandboxId: 'pz1', snapshotId: 'snap-pz1', memory: true });
    assert.equal(again.snapshot?.pauseMs, 0);

    const t = Date.now();
    const res = await rpcClients(b.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'pz1', snapshotId: 'snap-pz1', envdAccessToken: 'tok-pz1' }) });
    const resumeMs = Date.now() - t;
    assert.match(res.sandbox!.address, /^10\.215\./);
    const first = await counter(b, 'pz1');
    assert.ok(first && first.n >= before.n, `the counter continues on B (${before.n} → ${first?.n})`);
    assert.equal(first.cwd, '/home/user/work');
    assert.equal(first.mark, 'pz1', 'its environment came along');
    assert.equal(first.digest, before.digest, 'its 20 MB of memory came along');
    const p = processClient(b.proxyUrl, 'pz1', 'tok-pz1');
    const note = await runInSandbox(p, 'cat /home/user/work/note; echo $SBX; hostname');
    assert.deepEqual(note.stdout.trim().split('\n'), ['kept', 'pz1', 'pz1'], 'files, env vars of new commands and the hostname');
    console.log(`pause on A ${pauseMs} ms (node ${paused.snapshot?.pauseMs} ms), resume on B ${resumeMs} ms, snapshot ${(Number(paused.snapshot?.sizeBytes) / 1048576).toFixed(1)} MiB`);
  });

  it('resumes on the pausing node in place, at the same address', async () => {
    const rpc = rpcClients(b.rpcUrl).sandboxes;
    const address = (await rpc.list({})).sandboxes.find((s) => s.sandboxId === 'pz1')!.address;
    await rpc.pause({ sandboxId: 'pz1', snapshotId: 'snap-pz1-b', memory: true });
    const t = Date.now();
    const res = await rpc.create({ sandbox: spec({ sandboxId: 'pz1', snapshotId: 'snap-pz1-b', envdAccessToken: 'tok-pz1' }) });
    const ms = Date.now() - t;
    assert.equal(res.sandbox!.address, address);
    assert.ok(await waitFor(async () => (await counter(b, 'pz1')) !== null, 5000));
    console.log(`in-place resume on B ${ms} ms`);
  });

  it('memory:false keeps the files only and boots envd again', async () => {
    const rpc = rpcClients(b.rpcUrl).sandboxes;
    const paused = await rpc.pause({ sandboxId: 'pz1', snapshotId: 'snap-pz1-fs', memory: false });
    assert.equal(paused.snapshot?.memory, false);
    // As the control plane does before resuming elsewhere: a repeated Pause waits for the commit.
    await rpc.pause({ sandboxId: 'pz1', snapshotId: 'snap-pz1-fs', memory: false });
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'pz1', snapshotId: 'snap-pz1-fs', envdAccessToken: 'tok-pz1' }) });
    const p = processClient(a.proxyUrl, 'pz1', 'tok-pz1');
    const r = await runInSandbox(p, 'cat /home/user/work/note; pgrep -f [h]og[.]py >/dev/null && echo running || echo gone; echo $SBX');
    assert.deepEqual(r.stdout.trim().split('\n'), ['kept', 'gone', 'pz1']);
    assert.equal(await rpcOutcome(rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'pz1' })), 'ok');
  });

  it('a persistent snapshot leaves the sandbox running and starts new sandboxes elsewhere', async () => {
    await busySandbox(a, 'pz2');
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    const snap = await rpc.snapshot({ sandboxId: 'pz2', snapshotId: 'persist-pz2' });
    assert.equal(snap.sandbox?.sandboxId, 'pz2');
    const n0 = (await counter(a, 'pz2'))!.n;
    assert.ok(await waitFor(async () => ((await counter(a, 'pz2'))?.n ?? 0) > n0 + 5, 10_000), 'the original keeps running');
    await rpcClients(b.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'pz2copy', snapshotId: 'persist-pz2', envdAccessToken: 'tok-copy' }) });
    const c = await counter(b, 'pz2copy');
    assert.ok(c && c.mark === 'pz2', 'the copy runs the snapshot\'s processes');
    const hn = await runInSandbox(processClient(b.proxyUrl, 'pz2copy', 'tok-copy'), 'hostname');
    assert.equal(hn.stdout.trim(), 'pz2copy');
    // Two sandboxes at once from one snapshot on one node.
    await Promise.all(
      ['pz2c2', 'pz2c3'].map((id) => rpcClients(a.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: id, snapshotId: 'persist-pz2', envdAccessToken: 'tok' }) })),
    );
    assert.ok(await counter(a, 'pz2c2'));
    assert.ok(await counter(a, 'pz2c3'));
    for (const [node, id] of [[b, 'pz2copy'], [a, 'pz2c2'], [a, 'pz2c3'], [a, 'pz2']] as const) await rpcClients(node.rpcUrl).sandboxes.delete({ sandboxId: id });
    // B keeps its downloaded copy as a cache, bounded (COVE_LOCAL_SNAPSHOTS=1 here): a second snapshot's copy
    // pushes the older one out; both still start sandboxes (from storage).
    assert.equal(await exists(join(B.dataDir, 'snapshots', 'persist-pz2', 'images')), true);
    await busySandbox(a, 'pz6');
    await rpcClients(a.rpcUrl).sandboxes.snapshot({ sandboxId: 'pz6', snapshotId: 'persist-pz6' });
    await rpcClients(b.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'pz6copy', snapshotId: 'persist-pz6', envdAccessToken: 'tok' }) });
    await b.orchestrator.snapshots.sweep();
    assert.equal(await exists(join(B.dataDir, 'snapshots', 'persist-pz2')), false, 'the older copy went');
    assert.equal(await exists(join(B.dataDir, 'snapshots', 'persist-pz6', 'images')), true, 'the newer one stays');
    await rpcClients(b.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'pz2again', snapshotId: 'persist-pz2', envdAccessToken: 'tok' }) });
    assert.equal((await counter(b, 'pz2again'))?.mark, 'pz2', 'and it still starts sandboxes, from storage');
    for (const [node, id] of [[b, 'pz6copy'], [b, 'pz2again'], [a, 'pz6']] as const) await rpcClients(node.rpcUrl).sandboxes.delete({ sandboxId: id });
  });

  it('answers bad input, missing and corrupt snapshots with the documented codes', async () => {
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    assert.equal(await rpcOutcome(rpc.pause({ sandboxId: 'nosuch', snapshotId: 'x1', memory: true })), Code.NotFound);
    assert.equal(await rpcOutcome(rpc.pause({ sandboxId: 'pz1', snapshotId: 'Bad/Id', memory: true })), Code.InvalidArgument);
    assert.equal(await rpcOutcome(rpc.snapshot({ sandboxId: 'nosuch', snapshotId: 'x2' })), Code.NotFound);
    assert.equal(await rpcOutcome(rpc.create({ sandbox: spec({ sandboxId: 'm1', snapshotId: 'never-made' }) })), Code.NotFound);
    assert.equal(await rpcOutcome(rpc.create({ sandbox: spec({ sandboxId: 'm1', cold: true }) })), Code.InvalidArgument);
    assert.equal(await rpcOutcome(rpc.create({ sandbox: spec({ sandboxId: 'm1', snapshotId: '../etc' }) })), Code.InvalidArgument);
    // Corrupt: the memory image's bytes change in storage.
    await busySandbox(a, 'pz3');
    const paused = await rpc.pause({ sandboxId: 'pz3', snapshotId: 'snap-pz3', memory: true });
    assert.ok(paused.snapshot);
    await rpc.pause({ sandboxId: 'pz3', snapshotId: 'snap-pz3', memory: true });
    const artifacts = join(OBJECTS, 'artifacts', 'sha256');
    const manifest = JSON.parse(await readFile(join(OBJECTS, 'snapshots', 'snap-pz3', 'manifest.json'), 'utf8')) as { memory: { sha256: string } };
    const file = join(artifacts, manifest.memory.sha256.slice(0, 2), manifest.memory.sha256);
    await writeFile(file, 'not the image');
    assert.equal(await rpcOutcome(rpcClients(b.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'pz3', snapshotId: 'snap-pz3' }) })), Code.DataLoss);
    assert.ok(!(await rpcClients(b.rpcUrl).sandboxes.list({})).sandboxes.some((s) => s.sandboxId === 'pz3'), 'nothing left on B');
    // DeleteSnapshots removes it from storage and from A's cache; a resume then is NOT_FOUND.
    await rpc.deleteSnapshots({ snapshotIds: ['snap-pz3', 'never-made'] });
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'snap-pz3', 'manifest.json')), false);
    assert.equal(await exists(file), false, 'its unreferenced memory image is deleted too');
    assert.equal(await exists(join(A.dataDir, 'snapshots', 'snap-pz3')), false);
    assert.equal(await rpcOutcome(rpc.create({ sandbox: spec({ sandboxId: 'pz3', snapshotId: 'snap-pz3' }) })), Code.NotFound);
  });

  it('refuses forged, unsigned and altered manifests and swapped artifacts (DATA_LOSS), and nothing of them runs', async () => {
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    await busySandbox(a, 'pz7');
    await busySandbox(a, 'pz8');
    for (const id of ['pz7', 'pz8']) {
      await rpc.pause({ sandboxId: id, snapshotId: `snap-${id}`, memory: true });
      await rpc.pause({ sandboxId: id, snapshotId: `snap-${id}`, memory: true });
    }
    const manifestFile = (id: string): string => join(OBJECTS, 'snapshots', id, 'manifest.json');
    const artifactFile = (sha: string): string => join(OBJECTS, 'artifacts', 'sha256', sha.slice(0, 2), sha);
    type M = Record<string, unknown> & { upper: { sha256: string; size: number }; memory: { sha256: string; size: number } };
    const goodText = await readFile(manifestFile('snap-pz8'), 'utf8');
    const good = JSON.parse(goodText) as M;
    const other = JSON.parse(await readFile(manifestFile('snap-pz7'), 'utf8')) as M;
    const { mac: _, ...unsigned } = good;
    const resumeOnB = () => rpcOutcome(rpcClients(b.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'pz8', snapshotId: 'snap-pz8', envdAccessToken: 'tok-pz8' }) }));
    const forgeries: Array<[string, string]> = [
      // Points at another sandbox's artifacts, its mac kept.
      ['altered to name the artifacts of another sandbox', JSON.stringify({ ...good, upper: other.upper, memory: other.memory })],
      ['signed with another key', signDocument('not-this-clusters-key-0123456789abcdef', 'snapshot-manifest', { ...unsigned, upper: other.upper, memory: other.memory })],
      ['unsigned (as written before manifests were signed)', JSON.stringify(unsigned)],
      ['another snapshot\'s genuine manifest', JSON.stringify(other)],
    ];
    for (const [what, text] of forgeries) {
      await writeFile(manifestFile('snap-pz8'), text);
      assert.equal(await resumeOnB(), Code.DataLoss, what);
    }
    await writeFile(manifestFile('snap-pz8'), goodText);
    // Swapped artifacts: the upper tar's bytes are another snapshot's (a valid tar), then the memory image altered.
    const upper = artifactFile(good.upper.sha256);
    const upperBytes = await readFile(upper);
    await writeFile(upper, await readFile(artifactFile(other.upper.sha256)));
    assert.equal(await resumeOnB(), Code.DataLoss, 'swapped upper tar');
    await writeFile(upper, upperBytes);
    const memory = artifactFile(good.memory.sha256);
    const memoryBytes = await readFile(memory);
    const altered = Buffer.from(memoryBytes);
    altered[altered.length >> 1] ^= 0xff;
    await writeFile(memory, altered);
    assert.equal(await resumeOnB(), Code.DataLoss, 'altered memory image');
    await writeFile(memory, memoryBytes);
    assert.ok(!(await rpcClients(b.rpcUrl).sandboxes.list({})).sandboxes.some((s) => s.sandboxId === 'pz8'), 'nothing of them runs on B');
    assert.equal(await exists(join(B.dataDir, 'snapshots', 'snap-pz8', 'images')), false, 'no unverified image was unpacked on B');
    // The genuine snapshot still resumes, with its own processes.
    assert.equal(await resumeOnB(), 'ok');
    assert.equal((await counter(b, 'pz8'))?.mark, 'pz8');
    await rpcClients(b.rpcUrl).sandboxes.delete({ sandboxId: 'pz8' });
    await rpc.deleteSnapshots({ snapshotIds: ['snap-pz7', 'snap-pz8'] });
  });

  it('a pause answers before its commit; storage down delays the commit, a repeated Pause waits for it, nothing is lost', async () => {
    await busySandbox(a, 'pz4');
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    const refused = async () => (await nodeMetric(a.proxyUrl, 'cove_snapshot_commit_failures_total')) ?? 0;
    const refusedBefore = await refused();
    // Storage refuses writes (a file where the snapshots dir must go; root ignores modes).
    await rm(join(OBJECTS, 'snapshots'), { recursive: true, force: true });
    await writeFile(join(OBJECTS, 'snapshots'), 'blocked');
    const paused = await rpc.pause({ sandboxId: 'pz4', snapshotId: 'snap-pz4', memory: true });
    assert.ok(Number(paused.snapshot?.sizeBytes) > 0, 'answered from the local copy');
    assert.equal(await nodeMetric(a.proxyUrl, 'cove_snapshot_commits_pending'), 1, 'the pause is held on the node');
    assert.equal(await rpcOutcome(rpc.pause({ sandboxId: 'pz4', snapshotId: 'other-id', memory: true })), Code.FailedPrecondition, 'another pause of it is refused');
    assert.equal(await rpcOutcome(rpc.delete({ sandboxId: 'pz4' })), Code.NotFound, 'it is paused, not running here');
    // Storage has refused the commit once; the job now waits out its retry delay (a second), in which storage comes back.
    assert.ok(await waitFor(async () => (await refused()) > refusedBefore, 20_000), 'the commit was tried and refused');
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'snap-pz4', 'manifest.json')), false);
    // Storage is back; the repeated Pause wakes the job instead of sitting out the delay, and answers once it landed.
    await rm(join(OBJECTS, 'snapshots'));
    const done = await rpc.pause({ sandboxId: 'pz4', snapshotId: 'snap-pz4', memory: true });
    assert.equal(done.snapshot?.snapshotId, 'snap-pz4');
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'snap-pz4', 'manifest.json')), true, 'committed once storage came back');
    assert.equal(await nodeMetric(a.proxyUrl, 'cove_snapshot_commits_pending'), 0);
    await rpcClients(b.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'pz4', snapshotId: 'snap-pz4', envdAccessToken: 'tok-pz4' }) });
    assert.equal((await counter(b, 'pz4'))?.mark, 'pz4');
    await rpcClients(b.rpcUrl).sandboxes.delete({ sandboxId: 'pz4' });
  });

  it('a resume in place does not wait for the commit, and a delete right after never leaves the snapshot behind', async () => {
    await busySandbox(a, 'pz5');
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    await rpc.pause({ sandboxId: 'pz5', snapshotId: 'snap-pz5', memory: true });
    await rpc.create({ sandbox: spec({ sandboxId: 'pz5', snapshotId: 'snap-pz5', envdAccessToken: 'tok-pz5' }) });
    assert.equal((await counter(a, 'pz5'))?.mark, 'pz5');
    await rpc.deleteSnapshots({ snapshotIds: ['snap-pz5'] });
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'snap-pz5', 'manifest.json')), false);
    assert.ok((await rpc.list({})).sandboxes.some((s) => s.sandboxId === 'pz5'), 'the running sandbox is untouched');
    assert.equal((await counter(a, 'pz5'))?.mark, 'pz5');
    await rpc.delete({ sandboxId: 'pz5' });
  });

  it('a pause that finds the node\'s disk full fails, and the sandbox runs on with its memory; with room again it pauses', async () => {
    await busySandbox(a, 'pz9');
    const rpc = rpcClients(a.rpcUrl).sandboxes;
    const before = (await counter(a, 'pz9'))!;
    // The node's snapshot files go on a filesystem with no room for the sandbox's memory image (the counter holds 20 MB).
    const dir = join(a.config.dataDir, 'snapshots');
    await mkdir(dir, { recursive: true });
    await promisify(execFile)('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'cove-test-full', dir]);
    try {
      const outcome = await rpcOutcome(rpc.pause({ sandboxId: 'pz9', snapshotId: 'snap-pz9', memory: true }));
      assert.equal(outcome, Code.FailedPrecondition, 'the pause fails (checkpoint_failed)');
      assert.ok((await rpc.list({})).sandboxes.some((s) => s.sandboxId === 'pz9'), 'still running here');
      // The same processes with the same memory, still counting.
      assert.ok(await waitFor(async () => ((await counter(a, 'pz9'))?.n ?? 0) > before.n, 20_000), 'the counter goes on');
      const now = (await counter(a, 'pz9'))!;
      assert.deepEqual([now.digest, now.mark], [before.digest, before.mark]);
      assert.deepEqual(await readdir(dir), [], 'nothing of the failed dump is left on the full disk');
      assert.equal(await nodeMetric(a.proxyUrl, 'cove_snapshot_commits_pending'), 0);
    } finally {
      await promisify(execFile)('umount', [dir]);
    }
    // With room again the same pause goes through and the sandbox resumes whole.
    await rpc.pause({ sandboxId: 'pz9', snapshotId: 'snap-pz9', memory: true });
    await rpc.create({ sandbox: spec({ sandboxId: 'pz9', snapshotId: 'snap-pz9', envdAccessToken: 'tok-pz9' }) });
    const resumed = (await counter(a, 'pz9'))!;
    assert.ok(resumed.n > before.n && resumed.digest === before.digest && resumed.mark === 'pz9', `resumed with its memory (${before.n} → ${resumed.n})`);
    await rpc.delete({ sandboxId: 'pz9' });
    await rpc.deleteSnapshots({ snapshotIds: ['snap-pz9'] });
  });

  it('a resume that finds the node\'s disk full fails and leaves nothing there; the sandbox stays resumable', async () => {
    await busySandbox(a, 'pz10');
    const before = (await counter(a, 'pz10'))!;
    const rpcA = rpcClients(a.rpcUrl).sandboxes;
    const rpcB = rpcClients(b.rpcUrl).sandboxes;
    await rpcA.pause({ sandboxId: 'pz10', snapshotId: 'snap-pz10', memory: true });
    await rpcA.pause({ sandboxId: 'pz10', snapshotId: 'snap-pz10', memory: true }); // returns once committed
    const dir = join(b.config.dataDir, 'snapshots');
    await mkdir(dir, { recursive: true });
    await promisify(execFile)('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'cove-test-full', dir]);
    try {
      // RESOURCE_EXHAUSTED (`node_disk_full`): the control plane tries another node, the sandbox stays paused.
      const outcome = await rpcOutcome(rpcB.create({ sandbox: spec({ sandboxId: 'pz10', snapshotId: 'snap-pz10', envdAccessToken: 'tok-pz10' }) }));
      assert.equal(outcome, Code.ResourceExhausted);
      assert.ok(!(await rpcB.list({})).sandboxes.some((s) => s.sandboxId === 'pz10'));
      assert.deepEqual(await readdir(dir), [], 'nothing of the download is left on the full disk');
    } finally {
      await promisify(execFile)('umount', [dir]);
    }
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'snap-pz10', 'manifest.json')), true, 'the snapshot is still in storage');
    await rpcB.create({ sandbox: spec({ sandboxId: 'pz10', snapshotId: 'snap-pz10', envdAccessToken: 'tok-pz10' }) });
    const resumed = (await counter(b, 'pz10'))!;
    assert.ok(resumed.digest === before.digest && resumed.mark === 'pz10', 'resumed with its memory');
    await rpcB.delete({ sandboxId: 'pz10' });
    await rpcA.deleteSnapshots({ snapshotIds: ['snap-pz10'] });
  });
});
