// CRIU's kernel-feature cache (criu.ts, kdatRunDir): criu runs in a mount namespace of its own whose /run
// is a keyed directory of a node-owned tmpfs, so the second dump/restore of a node loads the probe's
// result instead of probing again, while the slot's netns is still named in the host's /run/netns
// (the action script plumbs it from the host's mount namespace). A corrupt cache is rejected by criu
// and replaced; nothing is written to the host's own /run. Skipped only when criu or envd is missing.

import assert from 'node:assert/strict';
import { chmod, mkdir, readdir, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { criuCommand, KDAT_TMPFS, kdatRunDir } from '../src/checkpoint/criu.js';
import { startLazyPages } from '../src/checkpoint/lazy-pages.js';
import { eventually } from '@cove/test-support/eventually';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { healthy, leftovers, makeRuntime, sh, type TestRuntimeOptions } from './runtime-fixture.js';
import { checkpointPrereqs } from './checkpoint-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covtkd', vethPrefix: 'tkd-', subnet: '10.206.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const CHECKPOINTS = join(DATA_DIR, 'checkpoints');
const { criu, skip } = await checkpointPrereqs();

/** Sends `sig` to `pid`; false when there is no such process. */
function signal(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** The newest restore log of the slot (the runtime keeps it, and the one before, in the slot's directory). */
async function lastRestoreLog(slotId: string): Promise<string> {
  const log = await readFile(join(DATA_DIR, 'slots', slotId, 'restore.log'), 'utf8').catch(() => undefined);
  assert.ok(log !== undefined, 'a restore log was written');
  return log;
}

describe('CRIU kernel-feature cache', { timeout: 240_000, skip }, () => {
  const rt = makeRuntime(OPTS);
  let slot: SlotInfo;
  let round = 0;
  let runDir: string;

  /** Checkpoint then restore through the runtime; returns the restore's criu log and time. */
  async function roundTrip(): Promise<{ dumpLog: string; restoreLog: string; ms: number }> {
    const imageDir = join(CHECKPOINTS, `${slot.slotId}-${++round}`);
    await rt.checkpoint(slot.slotId, imageDir);
    const dumpLog = await readFile(join(imageDir, 'dump.log'), 'utf8');
    const rs = await rt.restore(slot.slotId, imageDir);
    assert.ok(await healthy(slot.address), 'envd answers after restore');
    return { dumpLog, restoreLog: await lastRestoreLog(slot.slotId), ms: rs.ms };
  }

  before(async () => {
    await rt.prepare();
    await mkdir(CHECKPOINTS, { recursive: true });
    slot = await rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 512 } });
    runDir = (await kdatRunDir(criu!))!;
    assert.ok(runDir, 'the cache directory could be set up');
  });

  after(async () => {
    if (slot) {
      await rt.destroy(slot.slotId);
      assert.deepEqual(await leftovers(OPTS, DATA_DIR, slot.slotId, slot.address), []);
    }
    await rm(CHECKPOINTS, { recursive: true, force: true });
    await rt.teardownHost();
  });

  it('keeps the cache on a tmpfs, keyed under the node-owned mount, closed to others', async () => {
    assert.equal((await statfs(KDAT_TMPFS)).type, 0x01021994, 'a tmpfs: gone with the boot, as CRIU intends');
    assert.equal(join(runDir, '..'), KDAT_TMPFS);
    assert.match(runDir.split('/').pop()!, /^[0-9a-f]{16}$/);
    assert.equal((await stat(KDAT_TMPFS)).mode & 0o777, 0o700);
    assert.equal((await stat(runDir)).mode & 0o777, 0o700);
    // Another criu build gets a directory of its own: it never reads a cache this one wrote.
    const other = join(DATA_DIR, 'criu-other');
    await mkdir(DATA_DIR, { recursive: true });
    await sh('cp', [criu!, other]);
    try {
      const otherDir = await kdatRunDir(other);
      assert.ok(otherDir && otherDir !== runDir && join(otherDir, '..') === KDAT_TMPFS);
      await rm(otherDir, { recursive: true });
    } finally {
      await rm(other, { force: true });
    }
  });

  it('loads the cache on a later dump and restore, and the netns is still named in the host\'s /run/netns', async () => {
    const hostRunBefore = (await readdir('/run')).filter((f) => f.startsWith('criu.kdat')).sort();
    await roundTrip(); // fills the cache if nothing did before
    const second = await roundTrip();
    assert.match(second.dumpLog, /Loaded kdat cache from \/run\/criu\.kdat/, 'the dump did not probe again');
    assert.match(second.restoreLog, /Loaded kdat cache from \/run\/criu\.kdat/, 'the restore did not probe again');
    const kdat = await stat(join(runDir, 'criu.kdat'));
    assert.ok(kdat.isFile() && kdat.size > 0);
    // The restored slot's netns is plumbed and named on the host, not in criu's private namespace.
    const netns = `${OPTS.instance}-${slot.slotId}`;
    assert.ok((await sh('ip', ['netns', 'list'])).stdout.split('\n').some((l) => l.split(' ')[0] === netns), `${netns} is listed on the host`);
    const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
    assert.ok(mountinfo.includes(` /run/netns/${netns} `), 'its bind mount is in the host\'s mount namespace');
    // Nothing criu did was written to, or mounted over, the host's own /run.
    assert.deepEqual((await readdir('/run')).filter((f) => f.startsWith('criu.kdat')).sort(), hostRunBefore);
    assert.ok(!mountinfo.split('\n').some((l) => l.split(' ')[4] === '/run'), 'no mount over the host\'s /run');
    console.log(`restore with the cache: ${second.ms} ms`);
  });

  it('rejects a corrupt cache (criu checks its magic), probes again and replaces it', async () => {
    await writeFile(join(runDir, 'criu.kdat'), Buffer.alloc(64, 0x41));
    const third = await roundTrip();
    assert.match(third.dumpLog, /Stale \/run\/criu\.kdat file/, 'the corrupt cache was noticed, not used');
    assert.doesNotMatch(third.dumpLog, /Loaded kdat cache/);
    const fourth = await roundTrip();
    assert.match(fourth.dumpLog, /Loaded kdat cache/, 'a good cache was written back');
    assert.match(fourth.restoreLog, /Loaded kdat cache/);
  });

  it('names the host\'s mount namespace by a pid that outlives criu, not the orchestrator\'s', async () => {
    // A stand-in criu reports what the real one (and its action script) would see.
    const fake = join(DATA_DIR, 'criu-probe');
    const out = join(DATA_DIR, 'criu-probe.out');
    await writeFile(fake, `#!/bin/sh
{ echo "ns=$(readlink /proc/self/ns/mnt)"; echo "host=$COVE_HOST_MNTNS"; echo "hostns=$(readlink "$COVE_HOST_MNTNS")"; echo "ppid=$PPID"; echo "run=$(ls -A /run | tr '\\n' ' ')"; } > "$1"
`);
    await chmod(fake, 0o755);
    try {
      const cmd = await criuCommand(fake, [out]);
      await sh(cmd.file, cmd.argv);
      const got = Object.fromEntries((await readFile(out, 'utf8')).trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      const mine = (await sh('readlink', ['/proc/self/ns/mnt'])).stdout.trim();
      assert.notEqual(got['ns'], mine, 'criu runs in a mount namespace of its own');
      assert.equal(got['hostns'], mine, 'COVE_HOST_MNTNS names the host\'s namespace');
      assert.notEqual(got['host'], `/proc/${process.pid}/ns/mnt`, 'not the orchestrator\'s pid, which a sandbox process could inherit');
      assert.equal(got['host'], `/proc/${got['ppid']}/ns/mnt`, 'the waiting parent of criu, alive as long as criu is');
      assert.ok(!got['run']!.split(' ').includes('netns'), 'criu\'s /run is the cache directory, not the host\'s');
    } finally {
      const dir = await kdatRunDir(fake);
      if (dir) await rm(dir, { recursive: true, force: true });
      await rm(fake, { force: true });
      await rm(out, { force: true });
    }
  });
  it('stops a lazy-pages daemon past its deadline whole: criu under the wrapper too, not only the wrapper', async () => {
    // A stand-in criu: says it listens (fd 3), notes its pid and parent, then waits as a daemon would.
    const fake = join(DATA_DIR, 'criu-lazy');
    const note = join(DATA_DIR, 'criu-lazy.pid');
    const work = join(DATA_DIR, 'criu-lazy-work');
    await mkdir(work, { recursive: true });
    await writeFile(fake, `#!/bin/sh\necho "$$ $PPID" > ${note}\nprintf x >&3\nexec 3>&-\nexec sleep 600\n`);
    await chmod(fake, 0o755);
    let pid = 0;
    try {
      const daemon = await startLazyPages({ criu: fake, imagesDir: work, workDir: work, cgroupProcs: [], deadlineMs: 100 });
      const [own, parent] = (await readFile(note, 'utf8')).trim().split(' ').map(Number);
      pid = own!;
      assert.equal(parent, daemon.pid, 'the stand-in runs under the kdat wrapper shell, as criu does');
      assert.equal(await daemon.done, 'deadline');
      await eventually(() => !signal(pid, 0), 5000, 'the daemon itself gone');
    } finally {
      if (pid) signal(pid, 'SIGKILL');
      const dir = await kdatRunDir(fake);
      if (dir) await rm(dir, { recursive: true, force: true });
      await rm(fake, { force: true });
      await rm(note, { force: true });
      await rm(work, { recursive: true, force: true });
    }
  });
});
