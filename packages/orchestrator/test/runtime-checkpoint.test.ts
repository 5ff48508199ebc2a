// SandboxRuntime.checkpoint/restore on a slot booted the normal way (envd as first process): an idle
// slot round-trips (times printed), then user processes started inside (a python http server, a process
// holding ~50 MB and a counter) survive a second round trip, every tmpfs comes back as it was; destroy afterwards
// leaves nothing.
// Skipped only when criu (scripts/install-criu.sh) or the envd bundle is missing.

import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { SandboxRuntimeError } from '../src/sandbox/runtime-errors.js';
import { healthy, leftovers, makeRuntime, sh, waitFor, type TestRuntimeOptions } from './runtime-fixture.js';
import { checkpointPrereqs, hogScript, readCounter } from './checkpoint-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covtk2', vethPrefix: 'tk2-', subnet: '10.229.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const CHECKPOINTS = join(DATA_DIR, 'checkpoints');
const { skip } = await checkpointPrereqs();

const HOG = hogScript(50);

/**
 * The slot's network as the host sees it: the sandbox end (addresses, routes, links up, IPv6 off, read by a process
 * inside its netns) and the host end (the gateway /32 peered with the sandbox's address, up, IPv6 off).
 */
async function netFacts(slotId: string): Promise<Record<string, string>> {
  const ns = `${OPTS.instance}-${slotId}`;
  const veth = `${OPTS.vethPrefix}${slotId}`;
  const out = async (cmd: string, args: string[]) => {
    const r = await sh(cmd, args);
    assert.equal(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const inside = (file: string) => out('nsenter', [`--net=/run/netns/${ns}`, 'cat', file]);
  return {
    sandboxV4: (await out('ip', ['-n', ns, '-o', '-4', 'addr', 'show'])).split('\n').map((l) => l.split(/\s+/).slice(1, 4).join(' ')).join('; '),
    sandboxV6: await out('ip', ['-n', ns, '-o', '-6', 'addr', 'show']),
    sandboxRoutes: (await out('ip', ['-n', ns, '-4', 'route', 'show'])).replace(/\s+/g, ' '),
    sandboxLinksUp: (await out('ip', ['-n', ns, '-o', 'link', 'show', 'up'])).split('\n').map((l) => l.split(/[:@]\s*/)[1]).join(' '),
    sandboxIpv6Off: `${await inside('/proc/sys/net/ipv6/conf/all/disable_ipv6')} ${await inside('/proc/sys/net/ipv6/conf/default/disable_ipv6')}`,
    hostEnd: (await out('ip', ['-o', '-4', 'addr', 'show', 'dev', veth])).split(/\s+/).slice(1, 6).join(' '),
    hostEndUp: String((await out('ip', ['-o', 'link', 'show', 'dev', veth])).includes(',UP')),
    hostEndIpv6Off: await out('cat', [`/proc/sys/net/ipv6/conf/${veth}/disable_ipv6`]),
  };
}


describe('SandboxRuntime checkpoint/restore', { timeout: 240_000, skip }, () => {
  const rt = makeRuntime(OPTS);
  let slot: SlotInfo;
  let round = 0;
  let booted: Record<string, string>;
  const imageDir = () => join(CHECKPOINTS, `${slot.slotId}-${++round}`);

  before(async () => {
    await rt.prepare();
    await mkdir(CHECKPOINTS, { recursive: true });
    slot = await rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 512 } });
    booted = await netFacts(slot.slotId);
  });

  after(async () => {
    await rm(CHECKPOINTS, { recursive: true, force: true });
    await rt.teardownHost();
  });

  it('round-trips an idle slot: gone after the checkpoint, envd answers on the same address after restore', async () => {
    const bootId = async () => {
      const r = await rt.exec(slot.slotId, ['/bin/cat', '/proc/sys/kernel/random/boot_id']);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    const id = await bootId();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(id, (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim(), 'not the host\'s boot');
    // Root inside cannot change it (read-only bind) nor unmount it to see the host's (no CAP_SYS_ADMIN).
    const w = await rt.exec(slot.slotId, ['/bin/sh', '-c', 'echo 00000000-0000-4000-8000-000000000000 > /proc/sys/kernel/random/boot_id || true; umount /proc/sys/kernel/random/boot_id 2>/dev/null; cat /proc/sys/kernel/random/boot_id']);
    assert.equal(w.stdout.trim(), id, 'the sandbox could neither rewrite nor uncover its boot_id');
    const cp = await rt.checkpoint(slot.slotId, imageDir());
    assert.equal(await rt.isAlive(slot.slotId), false);
    assert.equal(await healthy(slot.address), false, 'nothing answers while checkpointed');
    assert.ok(!(await rt.listSlots()).some((s) => s.slotId === slot.slotId), 'not listed while checkpointed');
    await assert.rejects(rt.claim(slot.slotId, { sandboxId: 'x', limits: { vcpu: 1, memoryMb: 512 }, allowInternetAccess: false }), (e: unknown) => e instanceof SandboxRuntimeError);
    await assert.rejects(rt.checkpoint(slot.slotId, imageDir()), (e: unknown) => e instanceof SandboxRuntimeError && e.code === 'runtime_slot_not_found');

    const rs = await rt.restore(slot.slotId, join(CHECKPOINTS, `${slot.slotId}-1`));
    assert.ok(await healthy(slot.address), 'envd answers after restore');
    assert.equal(await rt.isAlive(slot.slotId), true);
    const listed = (await rt.listSlots()).find((s) => s.slotId === slot.slotId);
    assert.equal(listed?.pid, rs.pid, 'the record carries the restored envd pid');
    assert.equal(listed?.address, slot.address);
    await assert.rejects(rt.restore(slot.slotId, join(CHECKPOINTS, `${slot.slotId}-1`)), (e: unknown) => e instanceof SandboxRuntimeError && e.code === 'runtime_checkpoint_failed');
    assert.equal(await bootId(), id, 'a memory restore is the same boot');
    console.log(`idle slot: checkpoint ${cp.ms} ms (image ${(cp.imageBytes / 1048576).toFixed(1)} MiB), restore ${rs.ms} ms (until envd answers)`);
  });

  it('keeps a process\'s memory and a listening http server across a second round trip; exec works after', async () => {
    const w = await rt.exec(slot.slotId, ['/bin/sh', '-c', 'mkdir -p /tmp/www && cat > /tmp/hog.py'], { input: HOG });
    assert.equal(w.code, 0, w.stderr);
    // setsid: a process `crun exec` starts is in crun's session (a leader outside the sandbox's pid
    // namespace), which CRIU refuses to dump; envd's own children are in sessions inside.
    const s = await rt.exec(
      slot.slotId,
      ['setsid', '/bin/sh', '-c', 'python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp/www >/dev/null 2>&1 & python3 /tmp/hog.py >/dev/null 2>&1 &'],
      { detach: true },
    );
    assert.equal(s.code, 0, s.stderr);
    assert.ok(await waitFor(async () => ((await readCounter(slot.address))?.n ?? 0) > 5, 20_000), 'http server and counter up');
    const before = (await readCounter(slot.address))!;

    const cp = await rt.checkpoint(slot.slotId, imageDir());
    assert.equal(await readCounter(slot.address), null, 'the http server is gone while checkpointed');
    const rs = await rt.restore(slot.slotId, join(CHECKPOINTS, `${slot.slotId}-${round}`));
    const first = await readCounter(slot.address);
    assert.ok(first, 'the http server answers right after restore');
    assert.ok(first.n >= before.n, `counter continues (${before.n} → ${first.n}), not restarted`);
    assert.ok(await waitFor(async () => ((await readCounter(slot.address))?.n ?? 0) > first.n + 10, 10_000), 'counter keeps counting');
    assert.equal((await readCounter(slot.address))!.digest, before.digest, 'the 50 MB buffer is intact (sha256 recomputed after restore)');
    const ps = await rt.exec(slot.slotId, ['/bin/sh', '-c', 'ps -eo args']);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, /python3 \/tmp\/hog\.py/);
    console.log(`slot with ~50 MB in use: checkpoint ${cp.ms} ms (image ${(cp.imageBytes / 1048576).toFixed(1)} MiB), restore ${rs.ms} ms`);
  });

  it('plumbs a restored slot\'s network as a booted one\'s (the restore action script\'s own plumbing)', async () => {
    const gateway = OPTS.subnet.replace(/\.0\/\d+$/, '.1');
    const expected = {
      sandboxV4: `lo inet 127.0.0.1/8; eth0 inet ${slot.address}/32`,
      sandboxV6: '',
      sandboxRoutes: `default via ${gateway} dev eth0 ${gateway} dev eth0 scope link`,
      sandboxLinksUp: 'lo eth0',
      sandboxIpv6Off: '1 1',
      // ip shows a peered /32 local address without its prefix.
      hostEnd: `${OPTS.vethPrefix}${slot.slotId} inet ${gateway} peer ${slot.address}/32`,
      hostEndUp: 'true',
      hostEndIpv6Off: '1',
    };
    assert.deepEqual(booted, expected, 'as booted');
    assert.deepEqual(await netFacts(slot.slotId), expected, 'as restored (twice, in the tests above)');
  });

  it('keeps the last restore\'s logs and the ones before, however many restores (a node disk is not a log archive)', async () => {
    const dir = imageDir();
    await rt.checkpoint(slot.slotId, dir);
    await rt.restore(slot.slotId, dir);
    assert.ok(await healthy(slot.address), 'envd answers after the third restore');
    const logs = (await readdir(join(DATA_DIR, 'slots', slot.slotId))).filter((f) => /^(restore|lazy-pages)\b.*\.log$/.test(f)).sort();
    assert.ok(logs.includes('restore.log'), `this restore's log is there (${logs.join(', ')})`);
    assert.deepEqual(logs.filter((f) => !['restore.log', 'restore.prev.log', 'lazy-pages.log', 'lazy-pages.prev.log'].includes(f)), [], 'no older logs kept');
  });

  it('runs the restore\'s action script for setup-namespaces only, not for criu\'s six other actions (install-criu.sh patch 12)', async () => {
    const dir = imageDir();
    await rt.checkpoint(slot.slotId, dir);
    await rt.restore(slot.slotId, dir);
    assert.ok(await healthy(slot.address), 'envd answers: the one run plumbed the network');
    // criu logs the script's path before each run of it, after the action's "Running <action> scripts".
    const log = (await readFile(join(DATA_DIR, 'slots', slot.slotId, 'restore.log'), 'utf8')).split('\n');
    const ran = log.flatMap((line, i) => (/\/cove-setup-net\.sh\]$/.test(line) ? [/Running (\S+) scripts/.exec(log[i - 1] ?? '')?.[1]] : []));
    assert.deepEqual(ran, ['setup-namespaces']);
    assert.equal(log.filter((line) => line.includes('not run (CRIU_SCRIPT_ACTIONS)')).length, 6, 'the six others named and skipped');
    await rm(dir, { recursive: true, force: true });
  });

  it('brings every tmpfs back as it was; only an empty one as mounted skips tar (install-criu.sh patch 8)', async () => {
    // The empty archive patch 8 writes for an empty tmpfs its mount recreates (45 bytes; anything tar wrote is larger).
    const emptyImages = async (dir: string) => {
      const names = (await readdir(dir)).filter((f) => /^tmpfs-dev-\d+\.tar\.gz\.img$/.test(f));
      const sizes = await Promise.all(names.map(async (f) => (await readFile(join(dir, f))).length));
      return sizes.filter((n) => n === 45).length;
    };
    const round = async (script: string) => {
      const w = await rt.exec(slot.slotId, ['/bin/sh', '-c', script]);
      assert.equal(w.code, 0, w.stderr);
      const dir = imageDir();
      await rt.checkpoint(slot.slotId, dir);
      const empty = await emptyImages(dir);
      await rt.restore(slot.slotId, dir);
      const r = await rt.exec(slot.slotId, ['/bin/sh', '-c', 'stat -c "%a %u" /dev/shm /proc/acpi /sys/firmware; ls -A /dev/shm; cat /dev/shm/* 2>/dev/null; true']);
      assert.equal(r.code, 0, r.stderr);
      return { empty, after: r.stdout.trim().split('\n') };
    };
    // Empty, but its root chmod'ed: the mount alone would give 1777, so it goes through tar and keeps its mode.
    assert.deepEqual(await round('chmod 700 /dev/shm'), { empty: 2, after: ['700 0', '1777 0', '1777 0'] });
    // Holding a file: through tar, the file comes back.
    assert.deepEqual(await round('chmod 1777 /dev/shm && printf kept > /dev/shm/f'), { empty: 2, after: ['1777 0', '1777 0', '1777 0', 'f', 'kept'] });
    // Empty again, as mounted: no tar, and it comes back empty, 1777 and writable.
    assert.deepEqual(await round('rm /dev/shm/f'), { empty: 3, after: ['1777 0', '1777 0', '1777 0'] });
    const w = await rt.exec(slot.slotId, ['/bin/sh', '-c', 'echo x > /dev/shm/y && cat /dev/shm/y && rm /dev/shm/y']);
    assert.equal(w.stdout, 'x\n', w.stderr);
  });

  it('destroys a restored slot without leftovers', async () => {
    await rt.destroy(slot.slotId);
    assert.deepEqual(await leftovers(OPTS, DATA_DIR, slot.slotId, slot.address), []);
  });
});
