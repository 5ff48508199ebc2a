// Layered slots: a slot boots on a stack of layer dirs over the base rootfs, its writable layer exports as a
// layer tar, and a stack of exports shows exactly the tree the writers left (added, changed, deleted files,
// replaced dirs), without the runtime's own files. Also the overlay option limit and restart recovery.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { LAYER_TAR_FLAGS } from '../src/sandbox/layer-export.js';
import type { LinuxSandboxRuntime } from '../src/sandbox/linux-runtime.js';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { leftovers, makeRuntime, STAND_IN, type TestRuntimeOptions } from './runtime-fixture.js';

const pexec = promisify(execFile);
const OPTS: TestRuntimeOptions = { instance: 'covtl1', vethPrefix: 'tl1-', subnet: '10.220.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const BOOT = { templateId: 'base', diskMb: 128, limits: { vcpu: 0.5, memoryMb: 128 }, process: STAND_IN };

async function sh(rt: LinuxSandboxRuntime, slot: SlotInfo, script: string): Promise<string> {
  const r = await rt.exec(slot.slotId, ['/bin/bash', '-c', script]);
  assert.equal(r.code, 0, `${script}: ${r.stderr}`);
  return r.stdout;
}

async function extract(tarFile: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await pexec('tar', ['-x', '-p', ...LAYER_TAR_FLAGS, '-f', tarFile, '-C', dir]);
  return dir;
}

async function members(tarFile: string): Promise<string[]> {
  const { stdout } = await pexec('tar', ['-t', '-f', tarFile]);
  return stdout.split('\n').filter(Boolean).map((n) => n.replace(/\/$/, ''));
}

describe('runtime layers', { timeout: 300_000 }, () => {
  let rt: LinuxSandboxRuntime;
  let base: string;
  let work: string;
  const made: SlotInfo[] = [];

  before(async () => {
    await makeRuntime(OPTS).teardownHost();
    await rm(DATA_DIR, { recursive: true, force: true });
    // A fresh object: the first one made (and opened up) the data dir that rm just removed.
    rt = makeRuntime(OPTS);
    await rt.prepare();
    base = (await rt.builtinRootfs('base'))!;
    assert.ok(base, 'base rootfs present');
    assert.equal(await rt.builtinRootfs('no-such-template'), null);
    work = await mkdtemp(join(DATA_DIR, 'w-'));
  });

  after(async () => {
    await rt.teardownHost();
    for (const s of made) assert.deepEqual(await leftovers(OPTS, DATA_DIR, s.slotId, s.address), []);
    await rm(DATA_DIR, { recursive: true, force: true });
  });

  const boot = async (layers?: string[]): Promise<SlotInfo> => {
    const s = await rt.boot({ ...BOOT, ...(layers ? { layers } : {}) });
    made.push(s);
    return s;
  };

  it('exports writable layers and stacks them with whiteouts and opaque dirs', async () => {
    // Layer 1 over base: adds files (one owned by the sandbox user), changes one, deletes one, fills a dir.
    const a = await boot();
    await sh(rt, a, [
      'echo one > /opt/l1.txt', 'echo keep > /opt/keep.txt', 'rm /etc/debian_version',
      'echo changed > /etc/motd', 'mkdir -p /srv/d && echo 1 > /srv/d/a && echo 2 > /srv/d/b',
      'install -o user -g user -m 640 /dev/null /opt/owned', 'ln -s /opt/l1.txt /opt/link',
    ].join(' && '));
    const t1 = await rt.exportUpper(a.slotId, join(work, 't1.tar'));
    const { stdout: sum1 } = await pexec('sha256sum', [join(work, 't1.tar')]);
    assert.equal(t1.sha256, sum1.split(' ')[0]);
    assert.ok(t1.bytes > 0);
    const m1 = await members(join(work, 't1.tar'));
    for (const want of ['opt/l1.txt', 'etc/debian_version', 'srv/d/a', 'opt/owned']) assert.ok(m1.includes(want), `${want} in ${m1.join(' ')}`);
    // The runtime's files and crun's mount points never travel in a layer.
    for (const never of ['etc/hostname', 'etc/hosts', 'etc/resolv.conf', 'proc', 'dev', 'sys', 'opt/cove/bin/node', 'opt/cove/bin/tini', 'opt/cove/envd', '.', './']) {
      assert.ok(!m1.includes(never), `${never} must not be in the layer`);
    }
    const { stdout: verbose } = await pexec('tar', ['-tv', '--numeric-owner', '-f', join(work, 't1.tar'), 'etc/debian_version', 'opt/owned']);
    assert.match(verbose, /^c.* 0,0 .*etc\/debian_version$/m, 'a deleted file is a 0/0 character device');
    assert.match(verbose, /101000\/101000 .*opt\/owned$/m, 'owners are shifted into the sandbox user namespace');
    await rt.destroy(a.slotId);
    const l1 = await extract(join(work, 't1.tar'), join(work, 'l1'));

    // Layer 2 over layer 1: changes a layer-1 file, deletes another, replaces a dir, touches the runtime files.
    const b = await boot([l1, base]);
    assert.equal(await sh(rt, b, 'cat /opt/l1.txt; test -e /etc/debian_version || echo gone'), 'one\ngone\n');
    await sh(rt, b, [
      'echo two > /opt/l1.txt', 'rm /opt/keep.txt', 'rm -rf /srv/d', 'mkdir /srv/d', 'echo 3 > /srv/d/c',
      'echo evil > /etc/hostname', 'echo 6.6.6.6 evil >> /etc/hosts', 'echo two > /etc/two.txt',
    ].join(' && '));
    await rt.exportUpper(b.slotId, join(work, 't2.tar'));
    const m2 = await members(join(work, 't2.tar'));
    assert.ok(m2.includes('srv/d/c') && m2.includes('opt/keep.txt') && m2.includes('etc/two.txt'), m2.join(' '));
    assert.ok(!m2.includes('etc/hostname') && !m2.includes('etc/hosts'));
    await rt.destroy(b.slotId);
    const l2 = await extract(join(work, 't2.tar'), join(work, 'l2'));

    const c = await boot([l2, l1, base]);
    const tree = await sh(rt, c, [
      'cat /opt/l1.txt /etc/motd /etc/two.txt', 'ls /srv/d', 'for f in /opt/keep.txt /etc/debian_version; do test -e $f && echo "$f exists"; done',
      'stat -c %U:%G:%a /opt/owned', 'readlink /opt/link', 'cat /etc/hostname', 'grep -c evil /etc/hosts || true', 'test -d /usr/bin && echo base',
    ].join('; '));
    assert.equal(tree, `two\nchanged\ntwo\nc\nuser:user:640\n/opt/l1.txt\n${c.slotId}\n0\nbase\n`);
    assert.deepEqual(await rt.layersInUse(), new Set([l2, l1, base]));

    // A restarted runtime (kill -9 of the orchestrator) finds the layered slot and the layers it stacks.
    const second = makeRuntime(OPTS);
    assert.deepEqual((await second.listSlots()).map((s) => s.slotId), [c.slotId]);
    assert.deepEqual(await second.layersInUse(), new Set([l2, l1, base]));
    assert.equal(await sh(second, c, 'cat /opt/l1.txt'), 'two\n');
    assert.deepEqual(await second.cleanupOrphans([]), [c.slotId]);
    assert.deepEqual(await leftovers(OPTS, DATA_DIR, c.slotId, c.address), []);
    assert.deepEqual(await second.layersInUse(), new Set());
  });

  it('stacks more layers than absolute paths fit in a page, and refuses impossible stacks cleanly', async () => {
    // 90 layers named like the node cache's (<dir>/l/<16 hex>): 90 × ~50 bytes > 4095 as absolute paths.
    const cache = join(DATA_DIR, 'l');
    const layers: string[] = [];
    for (let i = 0; i < 90; i++) {
      const d = join(cache, i.toString(16).padStart(16, '0'));
      await mkdir(d, { recursive: true });
      layers.push(d);
    }
    await pexec('bash', ['-c', `echo top > ${layers[0]}/top.txt && echo bottom > ${layers[89]}/top.txt && echo deep > ${layers[89]}/deep.txt`]);
    const s = await boot([...layers, base]);
    assert.equal(await sh(rt, s, 'cat /top.txt /deep.txt'), 'top\ndeep\n');
    await rt.destroy(s.slotId);

    const before = await rt.listRecords();
    const many = Array.from({ length: 400 }, (_, i) => join(work, `layer-${String(i).padStart(6, '0')}`));
    await assert.rejects(rt.boot({ ...BOOT, layers: [...many, base] }), { code: 'runtime_bad_layers' });
    await assert.rejects(rt.boot({ ...BOOT, layers: [join(work, 'a:b'), base] }), { code: 'runtime_bad_layers' });
    await assert.rejects(rt.boot({ ...BOOT, layers: [join(work, 'missing'), base] }), { code: 'runtime_bad_layers' });
    assert.deepEqual(await rt.listRecords(), before, 'a refused stack leaves no slot behind');
  });
});
