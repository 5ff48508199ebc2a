// Checkpoint and restore of a real slot with CRIU: a python http server and a process holding ~100 MB
// and a counter survive a dump (tree gone) and a restore into the same slot (same overlay, same address).
// Skipped only when criu is not installed (./cove installs it with scripts/install-criu.sh).

import assert from 'node:assert/strict';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { checkpointSlot, findCriu, launchCheckpointable, readableCopy, removeNet, restoreSlot, type SlotNet } from '../src/checkpoint/criu.js';
import { leftovers, makeRuntime, PACKAGE_DIR, sh, STAND_IN, waitFor, type TestRuntimeOptions } from './runtime-fixture.js';
import { hogScript, readCounter } from './checkpoint-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covtck', vethPrefix: 'tck-', subnet: '10.228.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const criu = await findCriu();
const envdBundle = join(PACKAGE_DIR, '..', 'envd', 'dist', 'bundle', 'envd.cjs');
const haveEnvd = await access(envdBundle).then(() => true, () => false);

const HOG = hogScript(100);


/** Running (a zombie waiting for its reaper counts as gone). */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  return stat !== null && !/^\d+ \(.*\) [ZX]/.test(stat);
}

/** Summed RSS of a process and its descendants. */
async function treeRssKb(root: number): Promise<number> {
  const rows = (await sh('ps', ['-eo', 'pid=,ppid=,rss='])).stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
  const tree = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of rows) if (tree.has(ppid!) && !tree.has(pid!)) (tree.add(pid!), (grew = true));
  }
  return rows.filter(([pid]) => tree.has(pid!)).reduce((a, r) => a + (r[2] ?? 0), 0);
}

describe('CRIU checkpoint/restore of a slot', { timeout: 180_000, skip: criu ? false : 'criu not installed (run packages/orchestrator/scripts/install-criu.sh)' }, () => {
  const rt = makeRuntime(OPTS);
  let slot: SlotInfo | undefined;

  after(async () => {
    if (slot) {
      await rt.destroy(slot.slotId);
      assert.deepEqual(await leftovers(OPTS, DATA_DIR, slot.slotId, slot.address), []);
    }
    await rt.teardownHost();
  });

  it('restores processes, memory, listening sockets, cwd and env into the same slot', async () => {
    await rt.prepare();
    slot = await rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 512 }, process: haveEnvd ? undefined : STAND_IN });
    const slotDir = join(DATA_DIR, 'slots', slot.slotId);
    const rootfs = join(slotDir, 'rootfs');
    const crunRoot = join(DATA_DIR, 'crun');
    const net: SlotNet = {
      netnsName: `${OPTS.instance}-${slot.slotId}`,
      hostVeth: `${OPTS.vethPrefix}${slot.slotId}`,
      addressCidr: `${slot.address}/16`,
      gateway: rt.gateway,
    };

    // Relaunch the slot's container with user processes under tini beside the first process (as envd's
    // children would): same spec (netns owned by the sandbox's userns, /sys mounted by crun), same
    // overlay, same cgroup.
    await sh('crun', ['--root', crunRoot, 'kill', '--all', slot.slotId, 'KILL']);
    assert.ok(await waitFor(async () => !(await alive(slot!.pid)), 5000));
    await sh('crun', ['--root', crunRoot, 'delete', '--force', slot.slotId]);
    await removeNet(net);
    await sh('mkdir', ['-p', join(rootfs, 'tmp', 'www'), join(rootfs, 'srv', 'hog')]);
    // Written by host root: hand them to root inside (host uid 100000).
    await sh('chown', ['100000:100000', join(rootfs, 'tmp', 'www'), join(rootfs, 'srv', 'hog')]);
    await writeFile(join(rootfs, 'tmp', 'hog.py'), HOG);
    const spec = JSON.parse(await readFile(join(slotDir, 'bundle', 'config.json'), 'utf8'));
    const first = (spec.process.args as string[]).slice(2); // after `tini --`
    spec.process.args = [
      '/opt/cove/bin/tini', '--', '/bin/sh', '-c',
      'python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp/www >/dev/null 2>&1 & ' +
        '(cd /srv/hog && HOG_MARK=kept exec python3 /tmp/hog.py) & exec "$@"',
      'sh', ...first,
    ];
    const initPid = await launchCheckpointable({ crunRoot, slotId: slot.slotId, bundle: join(slotDir, 'bundle'), spec, net });
    assert.ok(await waitFor(async () => ((await readCounter(slot!.address))?.n ?? 0) > 5, 20_000), 'http server and counter up');
    const before = (await readCounter(slot.address))!;
    assert.equal(before.cwd, '/srv/hog');
    assert.equal(before.mark, 'kept');
    const rssKb = await treeRssKb(initPid);

    const imagesDir = join(DATA_DIR, 'checkpoints', `${slot.slotId}-${Date.now()}`);
    await sh('mkdir', ['-p', join(DATA_DIR, 'checkpoints')]);
    const cp = await checkpointSlot({ criu: criu!, initPid, imagesDir, rootfs, spec, net });
    assert.equal(await alive(initPid), false, 'the tree is gone after the checkpoint');
    assert.equal(await readCounter(slot.address), null, 'nothing answers while checkpointed');

    const bins = join(DATA_DIR, 'bin');
    const readable = join(DATA_DIR, 'bin-restore');
    // As the runtime does: this node's bind sources from its own spec, never from the image.
    const sources = {
      ...Object.fromEntries((spec.mounts as Array<{ type: string; destination: string; source: string }>).filter((m) => m.type === 'bind').map((m) => [m.destination, m.source])),
      '/opt/cove/bin/node': await readableCopy(join(bins, 'node'), readable),
      '/opt/cove/bin/tini': await readableCopy(join(bins, 'tini'), readable),
    };
    const rs = await restoreSlot({ criu: criu!, imagesDir, rootfs, net, sources });
    assert.ok(await alive(rs.initPid));
    // Both ran without hardware breakpoints (CRIU_NO_BREAKPOINTS_ENV): compel says so at -v4 for every task it lets go.
    for (const log of ['dump.log', 'restore.log']) {
      assert.match(await readFile(join(imagesDir, log), 'utf8'), /Force no-breakpoints restore of \d+/, log);
    }
    const afterRestore = await readCounter(slot.address);
    assert.ok(afterRestore, 'the http server answers on the same address right after restore');
    assert.ok(afterRestore.n >= before.n, `counter continues (${before.n} → ${afterRestore.n}), not restarted`);
    assert.ok(await waitFor(async () => ((await readCounter(slot!.address))?.n ?? 0) > afterRestore.n + 10, 10_000), 'counter keeps counting');
    const later = (await readCounter(slot.address))!;
    assert.equal(later.digest, before.digest, 'the 100 MB buffer is intact (sha256 recomputed after restore)');
    assert.equal(later.cwd, '/srv/hog');
    assert.equal(later.mark, 'kept');
    if (haveEnvd) {
      const health = await fetch(`http://${slot.address}:49983/health`);
      assert.equal(health.status, 204, 'envd answers after restore');
    }
    console.log(
      `criu: resident ~${Math.round(rssKb / 1024)} MiB; checkpoint ${cp.ms} ms, image ${(cp.imageBytes / 1048576).toFixed(1)} MiB; restore ${rs.ms} ms`,
    );
    await sh('rm', ['-rf', imagesDir]);
  });
});
