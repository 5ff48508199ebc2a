// A fork as the nodes see it (docs/pause-resume.md, "Fork"): the source's checkpoint (`Snapshot`) on node A, then
// copies — other sandbox ids — started from it with `Create{snapshot_id}` on A and on B, two real orchestrators
// sharing one cluster storage. The source controls its snapshot's bytes and storage is writable by more than the
// nodes, so a copy restores only what verifies: an altered memory image fails the copy on B (DATA_LOSS, nothing
// unpacked, nothing running) while A's copy from its own files runs; an unsigned or altered manifest is refused on
// A too; with the genuine bytes back every copy runs the source's processes under its own id and hostname.

import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Code } from '@connectrpc/connect';
import { SnapshotCommit } from '@cove/contracts/orchestrator';
import { checkpointPrereqs, hogScript } from './checkpoint-fixture.js';
import { exists, instance, rpcOutcome, processClient, rpcClients, runInSandbox, spec, startNodePair, startOrchestrator, stopNodePair, viaProxy, waitFor, type Running } from './orchestrator-fixture.js';

const A = instance('covfk1', 'fk1-', '10.246.0.0/16');
const B = instance('covfk2', 'fk2-', '10.247.0.0/16');
const STORAGE = '/var/tmp/cove-orch-test/fork-storage';
const OBJECTS = join(STORAGE, 'objects');
const { skip } = await checkpointPrereqs();

async function counter(node: Running, sandboxId: string): Promise<{ n: number; mark: string } | null> {
  const r = await viaProxy(node.proxyUrl, sandboxId, 8080, '/counter').catch(() => null);
  if (!r || r.status !== 200) return null;
  const [n, , , mark] = r.body.trim().split(' ');
  return { n: Number(n), mark: mark ?? '' };
}

/** A sandbox on `node` whose processes count up (served on :8080 with its id as the mark) and hold memory. */
async function startCounting(node: Running, id: string): Promise<void> {
  await rpcClients(node.rpcUrl).sandboxes.create({ sandbox: spec({ sandboxId: id, envdAccessToken: `tok-${id}`, envVars: { SBX: id } }) });
  const hog = Buffer.from(hogScript(20)).toString('base64');
  const r = await runInSandbox(
    processClient(node.proxyUrl, id, `tok-${id}`),
    `mkdir -p /tmp/www && echo ${hog} | base64 -d > /tmp/hog.py && (HOG_MARK=$SBX nohup python3 /tmp/hog.py >/dev/null 2>&1 &) && ` +
      `(nohup python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp/www >/dev/null 2>&1 &)`,
  );
  assert.equal(r.exitCode, 0);
  assert.ok(await waitFor(async () => ((await counter(node, id))?.n ?? 0) > 3, 20_000), 'counter up');
}

describe('fork across two orchestrators: copies restore only verified bytes', { timeout: 300_000, skip }, () => {
  let a: Running;
  let b: Running;
  const env = { COVE_STORAGE_URL: `file://${STORAGE}`, COVE_WARM_POOL: 'base=1' };

  before(async () => {
    [a, b] = await startNodePair([A, B], STORAGE, env);
  });

  after(async () => {
    await stopNodePair([a, b], [A, B], STORAGE);
  });

  it('an altered image fails the copy on B alone; an altered manifest fails it everywhere; genuine bytes start copies on both', async () => {
    const ra = rpcClients(a.rpcUrl).sandboxes;
    const rb = rpcClients(b.rpcUrl).sandboxes;
    await startCounting(a, 'fk1');

    // The fork's checkpoint: committed when answered; the source runs on.
    await ra.snapshot({ sandboxId: 'fk1', snapshotId: 'fork-fk1' });
    const manifestFile = join(OBJECTS, 'snapshots', 'fork-fk1', 'manifest.json');
    const goodManifest = await readFile(manifestFile, 'utf8');
    const m = JSON.parse(goodManifest) as Record<string, unknown> & { memory: { sha256: string } };
    const image = join(OBJECTS, 'artifacts', 'sha256', m.memory.sha256.slice(0, 2), m.memory.sha256);
    const genuine = await readFile(image);

    // Same size, one byte changed: only the digest can tell.
    const altered = Buffer.from(genuine);
    altered[altered.length >> 1] ^= 0xff;
    await writeFile(image, altered);
    assert.equal(await rpcOutcome(rb.create({ sandbox: spec({ sandboxId: 'fk1b', snapshotId: 'fork-fk1', envdAccessToken: 'tok-b' }) })), Code.DataLoss, 'altered image on B');
    assert.ok(!(await rb.list({})).sandboxes.some((s) => s.sandboxId === 'fk1b'), 'nothing runs on B');
    assert.equal(await exists(join(B.dataDir, 'snapshots', 'fork-fk1', 'images')), false, 'no unverified image was unpacked on B');
    // The origin restores from the files its own dump wrote, under the verified manifest.
    await ra.create({ sandbox: spec({ sandboxId: 'fk1a', snapshotId: 'fork-fk1', envdAccessToken: 'tok-a' }) });
    assert.equal((await counter(a, 'fk1a'))?.mark, 'fk1', "A's copy runs the source's processes");
    await writeFile(image, genuine);

    // A manifest nobody vouches for is refused on every node, the origin included.
    const { mac: _mac, ...unsigned } = JSON.parse(goodManifest) as Record<string, unknown>;
    await writeFile(manifestFile, JSON.stringify(unsigned));
    assert.equal(await rpcOutcome(ra.create({ sandbox: spec({ sandboxId: 'fk1a2', snapshotId: 'fork-fk1', envdAccessToken: 'tok-a2' }) })), Code.DataLoss, 'unsigned manifest on A');
    assert.equal(await rpcOutcome(rb.create({ sandbox: spec({ sandboxId: 'fk1b', snapshotId: 'fork-fk1', envdAccessToken: 'tok-b' }) })), Code.DataLoss, 'unsigned manifest on B');
    assert.ok(!(await ra.list({})).sandboxes.some((s) => s.sandboxId === 'fk1a2'));
    await writeFile(manifestFile, goodManifest);

    // Genuine again: the copy on B runs the source's processes, under its own id and hostname.
    await rb.create({ sandbox: spec({ sandboxId: 'fk1b', snapshotId: 'fork-fk1', envdAccessToken: 'tok-b' }) });
    const c = await counter(b, 'fk1b');
    assert.equal(c?.mark, 'fk1');
    const hn = await runInSandbox(processClient(b.proxyUrl, 'fk1b', 'tok-b'), 'hostname');
    assert.equal(hn.stdout.trim(), 'fk1b');
    assert.ok(((await counter(a, 'fk1'))?.n ?? 0) > 3, 'the source runs on');

    for (const [rpc, id] of [[ra, 'fk1'], [ra, 'fk1a'], [rb, 'fk1b']] as const) await rpc.delete({ sandboxId: id });
    await ra.deleteSnapshots({ snapshotIds: ['fork-fk1'] });
    assert.equal(await exists(manifestFile), false);
  });

  it('a deferred snapshot: A starts copies from its files with nothing in storage, B only once the commit was asked for', async () => {
    const ra = rpcClients(a.rpcUrl).sandboxes;
    const rb = rpcClients(b.rpcUrl).sandboxes;
    await startCounting(a, 'fk2');

    const taken = await ra.snapshot({ sandboxId: 'fk2', snapshotId: 'fork-fk2', commit: SnapshotCommit.DEFERRED });
    assert.ok(Number(taken.snapshot!.sizeBytes) > 0);
    const manifestFile = join(OBJECTS, 'snapshots', 'fork-fk2', 'manifest.json');
    assert.equal(await exists(manifestFile), false, 'nothing committed');
    // A copy on A, from A's own files: nothing in storage is needed. Its restore leaves the images as the dump
    // wrote them (criu's own files go to the slot's dir): a commit reading them meanwhile sees no change.
    const images = join(A.dataDir, 'snapshots', 'fork-fk2', 'images');
    const listing = async () => (await readdir(images)).sort().join(' ');
    const dumped = await listing();
    await ra.create({ sandbox: spec({ sandboxId: 'fk2a', snapshotId: 'fork-fk2', envdAccessToken: 'tok-a' }) });
    assert.equal((await counter(a, 'fk2a'))?.mark, 'fk2', "A's copy runs the source's processes");
    assert.equal(await listing(), dumped, 'the restore wrote nothing into the images');
    assert.equal(await exists(manifestFile), false, 'still nothing committed');
    // B has nothing to start from yet.
    assert.equal(await rpcOutcome(rb.create({ sandbox: spec({ sandboxId: 'fk2b', snapshotId: 'fork-fk2', envdAccessToken: 'tok-b' }) })), Code.NotFound);

    // PENDING commits that snapshot and nothing else: another sandbox's or an unknown id is NOT_FOUND, no checkpoint.
    const pending = (sandboxId: string, snapshotId: string) => ra.snapshot({ sandboxId, snapshotId, commit: SnapshotCommit.PENDING });
    assert.equal(await rpcOutcome(pending('fk2a', 'fork-fk2')), Code.NotFound);
    assert.equal(await rpcOutcome(pending('fk2', 'fork-none')), Code.NotFound);
    assert.equal(await exists(join(A.dataDir, 'snapshots', 'fork-none')), false, 'no checkpoint taken for it');
    const [c1, c2] = await Promise.all([pending('fk2', 'fork-fk2'), pending('fk2', 'fork-fk2')]);
    assert.equal(c1.snapshot!.snapshotId, 'fork-fk2');
    assert.equal(c1.snapshot!.sizeBytes, c2.snapshot!.sizeBytes);
    assert.equal(await exists(manifestFile), true, 'committed');
    await rb.create({ sandbox: spec({ sandboxId: 'fk2b', snapshotId: 'fork-fk2', envdAccessToken: 'tok-b' }) });
    assert.equal((await counter(b, 'fk2b'))?.mark, 'fk2', "B's copy runs the source's processes");

    // Deleted: storage and A's files go, and nothing starts from it any more.
    await ra.deleteSnapshots({ snapshotIds: ['fork-fk2'] });
    assert.equal(await exists(manifestFile), false);
    assert.equal(await exists(join(A.dataDir, 'snapshots', 'fork-fk2')), false);
    assert.equal(await rpcOutcome(pending('fk2', 'fork-fk2')), Code.NotFound);

    // One deleted before anyone asked for its commit leaves nothing either, on A or in storage.
    await ra.snapshot({ sandboxId: 'fk2', snapshotId: 'fork-fk2x', commit: SnapshotCommit.DEFERRED });
    await ra.deleteSnapshots({ snapshotIds: ['fork-fk2x'] });
    assert.equal(await exists(join(A.dataDir, 'snapshots', 'fork-fk2x')), false);
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'fork-fk2x')), false);
    assert.equal(await rpcOutcome(ra.create({ sandbox: spec({ sandboxId: 'fk2c', snapshotId: 'fork-fk2x', envdAccessToken: 'tok-c' }) })), Code.NotFound);
    assert.ok(((await counter(a, 'fk2'))?.n ?? 0) > 3, 'the source runs on');

    // A restart of A forgets a deferred snapshot (it lives in the node's memory): nothing starts from it or commits
    // it any more, and the source and the copy started from the earlier one run on, re-adopted.
    await ra.snapshot({ sandboxId: 'fk2', snapshotId: 'fork-fk2y', commit: SnapshotCommit.DEFERRED });
    await a.close();
    a = await startOrchestrator(A, env);
    const ra2 = rpcClients(a.rpcUrl).sandboxes;
    assert.equal(await rpcOutcome(ra2.snapshot({ sandboxId: 'fk2', snapshotId: 'fork-fk2y', commit: SnapshotCommit.PENDING })), Code.NotFound);
    assert.equal(await rpcOutcome(ra2.create({ sandbox: spec({ sandboxId: 'fk2d', snapshotId: 'fork-fk2y', envdAccessToken: 'tok-d' }) })), Code.NotFound);
    assert.equal(await exists(join(OBJECTS, 'snapshots', 'fork-fk2y')), false, 'never committed');
    for (const id of ['fk2', 'fk2a']) assert.ok(await waitFor(async () => ((await counter(a, id))?.n ?? 0) > 3, 20_000), `${id} runs on after the restart`);

    for (const [rpc, id] of [[ra2, 'fk2'], [ra2, 'fk2a'], [rb, 'fk2b']] as const) await rpc.delete({ sandboxId: id });
  });
});
