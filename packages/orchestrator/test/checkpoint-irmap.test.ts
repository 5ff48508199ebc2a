// Inotify watches across a checkpoint, and the host-side scan that finds their paths (CRIU's irmap). A watch on
// the slot's overlay has no openable file handle, so criu resolves it by walking the sandbox's tree from the host,
// as root: install-criu.sh's patch 3 keeps that walk in the tree's root mount (no links, no other mounts) and bounds
// it. Each abuse below succeeds with an unpatched criu (COVE_CRIU=/var/lib/cove/tools/criu-4.1.1/criu: the dump
// follows the planted link into the host's tree, or walks the sandbox's /proc, or has no bound).
// Skipped only when criu (scripts/install-criu.sh) or the envd bundle is missing.

import assert from 'node:assert/strict';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_CRIU } from '../src/checkpoint/criu.js';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { SandboxRuntimeError } from '../src/sandbox/runtime-errors.js';
import { healthy, makeRuntime, waitFor, type TestRuntimeOptions } from './runtime-fixture.js';
import { checkpointPrereqs } from './checkpoint-fixture.js';

// The whole-root scan is on by default only with Cove's criu (criu.ts, irmapScanRoot); forced on here so the abuses
// below also run against another binary (COVE_CRIU). checkpointSlot runs in this process and reads it.
process.env['COVE_CRIU_IRMAP_SCAN_ROOT'] = '1';
const OPTS: TestRuntimeOptions = { instance: 'covtir', vethPrefix: 'tir-', subnet: '10.241.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const CHECKPOINTS = join(DATA_DIR, 'checkpoints');
const { criu, skip } = await checkpointPrereqs();

/**
 * Holds an inotify watch on argv[2] (relative to argv[1], reached one component at a time, so the path may exceed
 * PATH_MAX), then goes back to / and appends each event's name to argv[3] ("watching" first).
 */
const WATCHER = String.raw`
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
for c in sys.argv[1].split('/'):
    os.chdir(c or '/')
if libc.inotify_add_watch(fd, sys.argv[2].encode(), 0x100) < 0:
    sys.exit('watch failed: errno %d' % ctypes.get_errno())
os.chdir('/')
open(sys.argv[3], 'w').write('watching\n')
while True:
    buf, i = os.read(fd, 65536), 0
    while i < len(buf):
        _, _, _, n = struct.unpack_from('iIII', buf, i)
        with open(sys.argv[3], 'a') as f:
            f.write('event %s\n' % buf[i + 16:i + 16 + n].rstrip(b'\0').decode())
        i += 16 + n
`;

/** 200-character directory names: four of them, `localauthority`, then seventeen more put `w` beyond PATH_MAX. */
const comp = (i: number) => `${'d'.repeat(197)}${String(i).padStart(3, '0')}`;
const HEAD = Array.from({ length: 4 }, (_, i) => comp(i)).join('/');
const TAIL = Array.from({ length: 17 }, (_, i) => comp(100 + i)).join('/');
const DEEP = `/deep/${HEAD}/localauthority/${TAIL}`;

describe('inotify watches across a checkpoint; the scan for their paths stays in the sandbox', { timeout: 300_000, skip }, () => {
  const rt = makeRuntime(OPTS);
  let slot: SlotInfo;
  let round = 0;
  let lastImages = '';
  const imageDir = () => (lastImages = join(CHECKPOINTS, `${slot.slotId}-${++round}`));
  const rootfs = () => join(DATA_DIR, 'slots', slot.slotId, 'rootfs');
  const sh = async (cmd: string, input?: string) => {
    const r = await rt.exec(slot.slotId, ['/bin/sh', '-c', cmd], { input });
    assert.equal(r.code, 0, `${cmd}: ${r.stderr}`);
    return r.stdout.trim();
  };
  /** Starts a watcher (setsid: out of crun exec's session, which CRIU would refuse) and returns its pid. */
  const watch = async (dir: string, name: string, log: string) => {
    await sh(`setsid python3 /tmp/watch.py '${dir}' '${name}' ${log} >/dev/null 2>&1 &`);
    assert.ok(await waitFor(async () => (await rt.exec(slot.slotId, ['/bin/cat', log])).stdout.startsWith('watching'), 15_000), `the watch on ${dir}/${name}`);
    return sh(`pgrep -f 'watch.py ${dir.slice(0, 20)}' | head -1`);
  };
  /** A refused dump leaves everything running: envd, the watcher (same pid). */
  const runsOn = async (pid: string) => {
    assert.equal(await rt.isAlive(slot.slotId), true);
    assert.ok(await healthy(slot.address), 'envd answers');
    assert.equal(await sh(`kill -0 ${pid} && echo alive`), 'alive');
  };
  const dumpLog = () => readFile(join(lastImages, 'dump.log'), 'utf8');

  before(async () => {
    await rt.prepare();
    await mkdir(CHECKPOINTS, { recursive: true });
    slot = await rt.boot({ templateId: 'base', diskMb: 1024, limits: { vcpu: 1, memoryMb: 512 } });
    await sh('cat > /tmp/watch.py', WATCHER);
  });

  after(async () => {
    await rm(CHECKPOINTS, { recursive: true, force: true });
    await rt.teardownHost();
  });

  it('a watched directory on the overlay is dumped by its path, and the watch works after the restore', async () => {
    await sh('mkdir -p /root/watched');
    await watch('/root', 'watched', '/tmp/watched.log');
    await rt.checkpoint(slot.slotId, imageDir());
    assert.match(await dumpLog(), /Dumping \/root\/watched as path for handle/);
    await rt.restore(slot.slotId, lastImages);
    await sh('touch /root/watched/after-restore');
    assert.ok(await waitFor(async () => (await rt.exec(slot.slotId, ['/bin/cat', '/tmp/watched.log'])).stdout.includes('event after-restore'), 10_000), 'the restored watch reports');
  });

  it('Cove\'s criu scans the whole root by default; COVE_CRIU_IRMAP_SCAN_ROOT=0 turns it off', { skip: criu === DEFAULT_CRIU ? false : 'COVE_CRIU names another binary' }, async () => {
    // /root is none of criu's fixed hints: only the whole-root scan names this watch.
    await sh('mkdir -p /root/by-default');
    const pid = await watch('/root', 'by-default', '/tmp/by-default.log');
    try {
      process.env['COVE_CRIU_IRMAP_SCAN_ROOT'] = '0';
      await assert.rejects(rt.checkpoint(slot.slotId, imageDir()), (e: unknown) => e instanceof SandboxRuntimeError && e.code === 'runtime_checkpoint_failed');
      assert.match(await dumpLog(), /Can't dump that handle/);
      await runsOn(pid);
      delete process.env['COVE_CRIU_IRMAP_SCAN_ROOT'];
      await rt.checkpoint(slot.slotId, imageDir());
      assert.match(await dumpLog(), /Dumping \/root\/by-default as path for handle/);
      await rt.restore(slot.slotId, lastImages);
      assert.ok(await healthy(slot.address));
    } finally {
      process.env['COVE_CRIU_IRMAP_SCAN_ROOT'] = '1';
    }
    await sh(`kill ${pid}`);
  });

  it('a link planted in the tree does not lead the scan into the host\'s tree', async () => {
    // `w` lies beyond PATH_MAX inside the sandbox, so the scan of / cannot name it; criu then tries its fixed hints,
    // one of which is /var/lib/polkit-1/localauthority. The tenant makes /var/lib/polkit-1 a link to the host's path
    // of its own tree: through it, w's path is short enough, and an unpatched criu records it.
    await sh(`python3 -c "import os, sys
os.chdir('/')
for c in sys.argv[1].strip('/').split('/') + ['w']:
    os.mkdir(c); os.chdir(c)" '${DEEP}'`);
    const pid = await watch(DEEP, 'w', '/tmp/deep.log');
    await sh(`ln -sfn '${rootfs()}/deep/${HEAD}' /var/lib/polkit-1`);
    await assert.rejects(rt.checkpoint(slot.slotId, imageDir()), (e: unknown) => e instanceof SandboxRuntimeError && e.code === 'runtime_checkpoint_failed');
    const log = await dumpLog();
    assert.match(log, /Can't dump that handle/);
    assert.doesNotMatch(log, /Dumping \/var\/lib\/polkit-1/, 'no path through the link');
    assert.doesNotMatch(log, /Refilling \/var\/lib\/polkit-1/, 'the link was not walked');
    await runsOn(pid);
    await sh('rm /var/lib/polkit-1');
  });

  it('a watch only another mount could explain (/proc/1) is not looked for there: /proc and /sys are not walked', async () => {
    const pid = await watch('/proc', '1', '/tmp/proc.log');
    await assert.rejects(rt.checkpoint(slot.slotId, imageDir()), (e: unknown) => e instanceof SandboxRuntimeError && e.code === 'runtime_checkpoint_failed');
    const log = await dumpLog();
    assert.match(log, /Can't dump that handle/);
    assert.doesNotMatch(log, /Refresh stat for \/(proc|sys)\//, 'the scan stayed on the root mount');
    await runsOn(pid);
    await sh(`kill ${pid}`);
  });

  it('the scan is bounded: a tree of 300 000 entries fails the dump, and the sandbox runs on', async () => {
    // Hard links: entries without inodes, cheap to make. The deep watch above still cannot be named, so the scan
    // would walk all of them.
    await sh(`python3 -c "import os
os.makedirs('/root/many')
for f in range(6):
    open('/root/many/f%d' % f, 'w').close()
    for i in range(50000):
        os.link('/root/many/f%d' % f, '/root/many/l%d-%d' % (f, i))"`);
    const pid = await sh(`pgrep -f 'watch.py /deep' | head -1`);
    await assert.rejects(rt.checkpoint(slot.slotId, imageDir()), (e: unknown) => e instanceof SandboxRuntimeError && e.code === 'runtime_checkpoint_failed');
    assert.match(await dumpLog(), /Scan budget exhausted/);
    await runsOn(pid);
    // Without the deep watch the tree checkpoints again (the bound is the scan's, not the tree's).
    await sh(`kill ${pid}; rm -rf /root/many`);
    await rt.checkpoint(slot.slotId, imageDir());
    await rt.restore(slot.slotId, lastImages);
    assert.ok(await healthy(slot.address));
  });
});
