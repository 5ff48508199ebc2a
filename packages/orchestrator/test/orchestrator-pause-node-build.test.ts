// A memory snapshot resumes on a node that never ran the dumping node's node binary (another Node.js build, as after
// an upgrade of some hosts): the committing node stores the node and tini builds the images run in cluster storage
// (once, content-addressed), the signed manifest names them, and the restoring node downloads what it lacks, verified,
// before CRIU maps it. Without them CRIU refuses the restore (mem.c "Can't open vma": another size) on every node that
// lacks the build, and once no node keeps it the sandbox can never run again. A build whose stored bytes do not match
// fails that node's restore only (`snapshot_restore_failed`), maps nothing, and loses nothing; a kept build that no
// longer matches its digest makes the commit go without builds instead of never.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { NODE_ERROR_CODE_HEADER, NODE_RESTORE_FAILED } from '@cove/contracts/link';
import { checkpointPrereqs, writeLaterNodeBuild } from './checkpoint-fixture.js';
import { exists, instance, processClient, rpcClients, runInSandbox, spec, startNodePair, stopNodePair, type Running } from './orchestrator-fixture.js';

const A = instance('covnb1', 'nb1-', '10.192.0.0/16');
const B = instance('covnb2', 'nb2-', '10.193.0.0/16');
const WORK = '/var/tmp/cove-orch-test/node-build';
const STORAGE = join(WORK, 'storage');
const LATER_NODE = join(WORK, 'node-later');
const { skip } = await checkpointPrereqs();

const sha256Of = async (file: string): Promise<string> => createHash('sha256').update(await readFile(file)).digest('hex');
const artifactFile = (sha: string): string => join(STORAGE, 'objects', 'artifacts', 'sha256', sha.slice(0, 2), sha);
const keptBuilds = (i: typeof A): Promise<string[]> => readdir(join(i.dataDir, 'bin-restore')).catch(() => []);

interface Manifest {
  memory: unknown;
  builds?: { node: { sha256: string; size: number }; init: { sha256: string; size: number } };
}
const manifestOf = async (snapshotId: string): Promise<Manifest> =>
  JSON.parse(await readFile(join(STORAGE, 'objects', 'snapshots', snapshotId, 'manifest.json'), 'utf8')) as Manifest;

describe('a memory snapshot across nodes with different node builds', { timeout: 300_000, skip }, () => {
  let a: Running;
  let b: Running;
  const env = { COVE_STORAGE_URL: `file://${STORAGE}`, COVE_WARM_POOL: 'base=1', COVE_LOCAL_SNAPSHOTS: '1' };

  before(async () => {
    await rm(WORK, { recursive: true, force: true });
    await mkdir(WORK, { recursive: true });
    await writeLaterNodeBuild(LATER_NODE);
    [a, b] = await startNodePair([A, B], STORAGE, env, { nodeBinary: LATER_NODE });
  });

  after(async () => {
    await stopNodePair([a, b], [A, B], WORK);
  });

  /** A sandbox on `node` with a background process; its pid. */
  async function withSleeper(node: Running, sandboxId: string): Promise<string> {
    await rpcClients(node.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId, envdAccessToken: `tok-${sandboxId}` }) });
    const r = await runInSandbox(processClient(node.proxyUrl, sandboxId, `tok-${sandboxId}`), 'nohup sleep 3000 >/dev/null 2>&1 </dev/null & echo $!');
    assert.equal(r.exitCode, 0);
    return r.stdout.trim();
  }

  /** Pauses with memory and waits for the commit, as the control plane does before a resume elsewhere (a repeated Pause). */
  async function pauseCommitted(node: Running, sandboxId: string, snapshotId: string): Promise<void> {
    const rpc = rpcClients(node.rpcUrl).sandboxes;
    await rpc.pause({ sandboxId, snapshotId, memory: true });
    await rpc.pause({ sandboxId, snapshotId, memory: true });
  }

  const sleeperOn = async (node: Running, sandboxId: string): Promise<string> =>
    (await runInSandbox(processClient(node.proxyUrl, sandboxId, `tok-${sandboxId}`), 'pgrep -x sleep')).stdout.trim();

  it('pauses on A, stores its builds once, and resumes on B, which fetches the node build it never ran', async () => {
    const pid = await withSleeper(a, 'nb1');
    await pauseCommitted(a, 'nb1', 'snap-nb1');
    const m = await manifestOf('snap-nb1');
    assert.ok(m.builds, 'the manifest names the builds the images run');
    assert.equal(m.builds.node.sha256, await sha256Of(process.execPath), "A's node build");
    assert.equal(m.builds.node.size, (await stat(process.execPath)).size);
    for (const build of [m.builds.node, m.builds.init]) assert.ok(await exists(artifactFile(build.sha256)), `build ${build.sha256} in cluster storage`);
    const nodeKey = m.builds.node.sha256.slice(0, 16);
    assert.ok(!(await keptBuilds(B)).includes(nodeKey), 'B never ran that build');

    await rpcClients(b.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'nb1', snapshotId: 'snap-nb1', envdAccessToken: 'tok-nb1' }) });
    assert.equal(await sleeperOn(b, 'nb1'), pid, 'the background process came back with its memory, same pid');
    const kept = join(B.dataDir, 'bin-restore', nodeKey, 'node');
    assert.equal(await sha256Of(kept), m.builds.node.sha256, 'B keeps the fetched build, verified');
    assert.equal((await stat(kept)).mode & 0o777, 0o755);
    const envdPid = (await b.runtime.listRecords()).find((r) => r.builds?.node === nodeKey)?.pid;
    assert.ok(envdPid, "a slot of B runs A's build");
    assert.equal((await stat(`/proc/${envdPid}/exe`)).size, (await stat(process.execPath)).size, "the restored envd maps A's build, not B's");

    // A second pause of the same node build uploads nothing new: the same artifact is named again.
    await pauseCommitted(b, 'nb1', 'snap-nb1-again');
    assert.equal((await manifestOf('snap-nb1-again')).builds?.node.sha256, m.builds.node.sha256);
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'nb1', snapshotId: 'snap-nb1-again', envdAccessToken: 'tok-nb1' }) });
    assert.equal(await sleeperOn(a, 'nb1'), pid, 'and back on A');
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'nb1' });
  });

  it('refuses a stored build whose bytes are not the manifest\'s: that restore fails alone, maps nothing, and the sandbox resumes once storage is right', async () => {
    const pid = await withSleeper(b, 'nb2');
    await pauseCommitted(b, 'nb2', 'snap-nb2');
    const m = await manifestOf('snap-nb2');
    assert.equal(m.builds?.node.sha256, await sha256Of(LATER_NODE), "B's own build");
    const laterKey = m.builds.node.sha256.slice(0, 16);
    assert.ok(!(await keptBuilds(A)).includes(laterKey));
    // Same size, other bytes: what a tampered or damaged object in cluster storage would be.
    const stored = artifactFile(m.builds.node.sha256);
    const good = await readFile(stored);
    const bad = Buffer.from(good);
    bad.write('not the build', 4096);
    await writeFile(stored, bad);

    const failed = await rpcClients(a.rpcUrl)
      .sandboxes.create({ sandbox: spec({ sandboxId: 'nb2', snapshotId: 'snap-nb2', envdAccessToken: 'tok-nb2' }) })
      .then(() => undefined, (err: unknown) => ConnectError.from(err));
    assert.ok(failed, 'the resume on A failed');
    assert.equal(failed.code, Code.Aborted);
    assert.equal(failed.metadata.get(NODE_ERROR_CODE_HEADER), NODE_RESTORE_FAILED, failed.message);
    assert.match(failed.message, /does not match the manifest/);
    assert.ok(!(await keptBuilds(A)).includes(laterKey), 'A kept nothing of the bad bytes');
    assert.ok(!(await rpcClients(a.rpcUrl).sandboxes.list({})).sandboxes.some((s) => s.sandboxId === 'nb2'), 'nothing runs on A');

    await writeFile(stored, good);
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'nb2', snapshotId: 'snap-nb2', envdAccessToken: 'tok-nb2' }) });
    assert.equal(await sleeperOn(a, 'nb2'), pid, 'resumed on A with its memory');
    assert.ok((await keptBuilds(A)).includes(laterKey), "A now keeps B's build");
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'nb2' });
  });

  it('commits without builds, rather than never, when a kept build no longer matches its digest', async () => {
    const pid = await withSleeper(a, 'nb3');
    const tini = (await a.runtime.listRecords()).find((r) => r.builds)!.builds!.init;
    const digestFile = join(A.dataDir, 'bin-restore', tini, 'tini.sha256');
    const good = await readFile(digestFile, 'utf8');
    // Same key, another digest: the copy's bytes are no longer what the node recorded (damage on its disk).
    await writeFile(digestFile, `${tini}${'f'.repeat(48)}\n`);
    try {
      await pauseCommitted(a, 'nb3', 'snap-nb3');
    } finally {
      await writeFile(digestFile, good);
    }
    const m = await manifestOf('snap-nb3');
    assert.ok(m.memory, 'committed with its memory');
    assert.equal(m.builds, undefined, 'and without builds, which it could not vouch for');
    assert.ok(!(await exists(artifactFile(`${tini}${'f'.repeat(48)}`))), 'nothing stored under the wrong digest');
    await rpcClients(a.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: 'nb3', snapshotId: 'snap-nb3', envdAccessToken: 'tok-nb3' }) });
    assert.equal(await sleeperOn(a, 'nb3'), pid, 'resumed where the build is kept');
    await rpcClients(a.rpcUrl).sandboxes.delete({ sandboxId: 'nb3' });
  });
});
