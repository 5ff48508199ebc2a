// The spawn broker's host operations (native/host-ops.c), done in its forked child without a tool: a slot's disk
// on an autoclearing loop device that leaves nothing attached once unmounted (or when its mount fails), an umount
// that never follows a link, a network link deleted by name, rlimits and a user namespace's sysctls set on the
// process asked for, and requests they do not understand refused.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually } from '@cove/test-support/eventually';
import { MountTable } from '../src/sandbox/mount-tree.js';
import { HOST_OP, run } from '../src/sandbox/run-command.js';

const attachedTo = (image: string): string => execFileSync('losetup', ['-j', image, '-O', 'NAME', '-n'], { encoding: 'utf8' }).trim();

describe('host operations of the spawn broker', { skip: process.getuid?.() !== 0 && 'needs root (mounts, loop devices)' }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cove-host-ops-'));
  });
  after(() => {
    for (const m of [join(dir, 'disk'), join(dir, 'bind')]) {
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  function image(name: string, ext4: boolean): string {
    const f = join(dir, name);
    writeFileSync(f, '');
    execFileSync('truncate', ['-s', '16M', f]);
    if (ext4) execFileSync('mkfs.ext4', ['-q', '-F', f]);
    return f;
  }

  it('mounts an ext4 image on a loop device with direct I/O that detaches itself once unmounted', async () => {
    const img = image('disk.ext4', true);
    const at = join(dir, 'disk');
    mkdirSync(at);
    const dev = (await run(HOST_OP.mountLoop, [img, at])).stdout.trim();
    assert.match(dev, /^\/dev\/loop\d+$/);
    assert.equal((await MountTable.read()).sourceOf(at), dev, "the teardown's lookup finds the device");
    const sys = `/sys/block/${dev.slice(5)}/loop`;
    assert.equal(readFileSync(`${sys}/autoclear`, 'utf8').trim(), '1');
    assert.equal(readFileSync(`${sys}/dio`, 'utf8').trim(), '1');
    assert.equal(attachedTo(img), dev);
    writeFileSync(join(at, 'f'), 'x');
    await run(HOST_OP.umount, [at]);
    assert.equal((await MountTable.read()).sourceOf(at), undefined);
    assert.equal(attachedTo(img), '', 'nothing left attached to the image');
  });

  it('leaves no loop device attached when the image cannot be mounted', async () => {
    const img = image('garbage.img', false);
    const at = join(dir, 'garbage');
    mkdirSync(at);
    const r = await run(HOST_OP.mountLoop, [img, at], { allowFailure: true });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^mount on .*garbage: /);
    assert.equal(attachedTo(img), '');
    assert.equal((await run(HOST_OP.mountLoop, [join(dir, 'missing.img'), at], { allowFailure: true })).code, 1);
  });

  it('mounts with the flags asked for, and never unmounts through a link', async () => {
    const src = join(dir, 'src');
    const at = join(dir, 'bind');
    mkdirSync(src);
    mkdirSync(at);
    await run(HOST_OP.mount, ['', src, at, 'bind', '']);
    assert.notEqual((await MountTable.read()).sourceOf(at), undefined);
    const link = join(dir, 'link');
    symlinkSync(at, link);
    const refused = await run(HOST_OP.umount, [link], { allowFailure: true });
    assert.equal(refused.code, 1);
    assert.notEqual((await MountTable.read()).sourceOf(at), undefined, 'the mount behind the link stays');
    await run(HOST_OP.umount, [at, 'detach']);
    assert.equal((await MountTable.read()).sourceOf(at), undefined);
    assert.equal((await run(HOST_OP.mount, ['', src, at, 'bind,suid', ''], { allowFailure: true })).code, 2, 'an unknown flag');
  });

  it('sets a process\'s rlimits and its user namespace\'s sysctls, and nothing outside them', async () => {
    // A user namespace of its own (its root is the host's root, as a sandbox's namespace is owned by host root).
    const child = spawn('unshare', ['--user', '--map-root-user', 'sleep', '60'], { stdio: 'ignore' });
    try {
      await new Promise((r) => child.once('spawn', r));
      const pid = child.pid!;
      await eventually(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('sleep'), 10_000, 'unshare to exec sleep in its namespace', 10);
      await run(HOST_OP.prlimit, [String(pid), '77', '4096']);
      const limits = readFileSync(`/proc/${pid}/limits`, 'utf8');
      assert.match(limits, /Max pending signals\s+77\s+77\s/);
      assert.match(limits, /Max msgqueue size\s+4096\s+4096\s/);
      const host = readFileSync('/proc/sys/user/max_inotify_instances', 'utf8').trim();
      await run(HOST_OP.usernsSysctl, [String(pid), 'user/max_inotify_instances=33']);
      const seen = execFileSync('nsenter', [`--user=/proc/${pid}/ns/user`, 'cat', '/proc/sys/user/max_inotify_instances'], { encoding: 'utf8' }).trim();
      assert.equal(seen, '33');
      assert.equal(readFileSync('/proc/sys/user/max_inotify_instances', 'utf8').trim(), host, 'the host\'s own is untouched');
      for (const bad of ['user/../kernel/pid_max=1', '/etc/passwd=x', 'user/max_inotify_instances']) {
        assert.equal((await run(HOST_OP.usernsSysctl, [String(pid), bad], { allowFailure: true })).code, 2, bad);
      }
      assert.equal((await run(HOST_OP.prlimit, ['0', '1', '1'], { allowFailure: true })).code, 2);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('deletes a network link by name, and says so when there is none', async () => {
    const name = `cvho-${process.pid % 100000}`;
    execFileSync('ip', ['link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`]);
    try {
      await run(HOST_OP.linkDel, [name]);
      assert.throws(() => execFileSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }), 'the link is gone');
      const again = await run(HOST_OP.linkDel, [name], { allowFailure: true });
      assert.equal(again.code, 1);
      assert.match(again.stderr, new RegExp(`^delete link ${name}: No such device`));
      assert.equal((await run(HOST_OP.linkDel, ['x'.repeat(16)], { allowFailure: true })).code, 2, 'a name longer than the kernel\'s');
    } finally {
      spawnSync('ip', ['link', 'del', name], { stdio: 'ignore' });
    }
  });

  it('refuses an operation it does not know, and a tool of that name is not looked up', async () => {
    const r = await run('cove:nonexistent', ['x'], { allowFailure: true });
    assert.deepEqual([r.code, r.stderr.trim()], [2, 'unknown host operation cove:nonexistent']);
    assert.ok(!existsSync('/usr/bin/cove:nonexistent'));
  });
});
