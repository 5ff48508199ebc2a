// tenant-fs against trees shaped the way a hostile tenant would shape them: links at file and directory level,
// absolute and relative, `..` tricks, links into /proc, FIFOs and oversized files. Host files outside the
// tree must stay byte-identical and root-owned whatever the tree holds.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname as hostHostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readTenantFile, runNftCommands, setUtsHostname, TenantFsError, TenantFsHelper, tenantFsHelper, writeTenantFiles } from '../src/sandbox/tenant-fs.js';
import { writeSlotEtcFiles } from '../src/sandbox/slot-etc-files.js';
import { allowInternet, denyInternet, internetSetHas } from '../src/sandbox/nft-firewall.js';
import { extractLayer } from '../src/sandbox/layer-export.js';

const UID = 100_000;

describe('tenant-fs: no link inside a tenant tree is followed', () => {
  let base: string;
  let host: string;
  const hostFiles: Record<string, string> = {};

  before(() => {
    base = mkdtempSync(join(tmpdir(), 'tenant-fs-'));
    host = join(base, 'host');
    mkdirSync(join(host, 'cron.d'), { recursive: true });
    for (const name of ['hostname', 'hosts', 'resolv.conf', 'passwd', 'cron.d/x']) {
      hostFiles[name] = `host ${name} ${Math.random()}\n`;
      writeFileSync(join(host, name), hostFiles[name]!);
    }
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  function assertHostUntouched(): void {
    for (const [name, content] of Object.entries(hostFiles)) {
      assert.equal(readFileSync(join(host, name), 'utf8'), content, `host file ${name} changed`);
      const st = statSync(join(host, name));
      assert.equal(st.uid, 0, `host file ${name} changed owner`);
    }
  }

  function tree(name: string): string {
    const root = join(base, name);
    mkdirSync(root, { recursive: true });
    return root;
  }

  it('replaces file-level links (absolute, relative, dangling, into /proc) with files and leaves their targets alone', async () => {
    const root = tree('file-links');
    mkdirSync(join(root, 'etc'));
    symlinkSync(join(host, 'hostname'), join(root, 'etc', 'hostname'));
    symlinkSync(`../../host/hosts`, join(root, 'etc', 'hosts'));
    symlinkSync('/proc/sysrq-trigger', join(root, 'etc', 'resolv.conf'));
    assert.equal(await writeSlotEtcFiles(root, 'sbx1', ['10.0.0.53'], UID), true);
    for (const f of ['hostname', 'hosts', 'resolv.conf']) {
      const st = lstatSync(join(root, 'etc', f));
      assert.ok(st.isFile(), `${f} is a plain file now`);
      assert.equal(st.uid, UID);
      assert.equal(st.mode & 0o777, 0o644);
    }
    assert.equal(readFileSync(join(root, 'etc', 'hostname'), 'utf8'), 'sbx1\n');
    assert.equal(readFileSync(join(root, 'etc', 'resolv.conf'), 'utf8'), 'nameserver 10.0.0.53\n');
    assertHostUntouched();
  });

  it('refuses a directory-level link (/etc -> host dir, /etc -> ../.., /etc -> /proc/self/root/...) and writes nothing', async () => {
    for (const [name, target] of [
      ['dir-abs', host],
      ['dir-rel', '../host'],
      ['dir-dotdot', '../../../../../../..' + host],
      ['dir-proc', `/proc/self/root${host}`],
    ] as const) {
      const root = tree(name);
      symlinkSync(target, join(root, 'etc'));
      assert.equal(await writeSlotEtcFiles(root, 'sbx2', [], UID), false, name);
      assertHostUntouched();
    }
  });

  it('creates a missing /etc owned by the sandbox root', async () => {
    const root = tree('no-etc');
    assert.equal(await writeSlotEtcFiles(root, 'sbx3', [], UID), true);
    assert.equal(statSync(join(root, 'etc')).uid, UID);
    assert.equal(readFileSync(join(root, 'etc', 'hosts'), 'utf8').includes('sbx3'), true);
  });

  it('reads plain files only: links, FIFOs, directories and oversized files are refused, absent ones say so', async () => {
    const root = tree('reads');
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc', 'passwd'), 'user:x:1000:1000::/home/user:/bin/bash\n');
    assert.equal((await readTenantFile(root, 'etc/passwd', 1024)).toString(), 'user:x:1000:1000::/home/user:/bin/bash\n');
    const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof TenantFsError ? e.code : String(e)));
    assert.equal(await code(readTenantFile(root, 'etc/passwd', 8)), 'tenant_fs_too_big');
    assert.equal(await code(readTenantFile(root, 'etc/group', 1024)), 'tenant_fs_absent');
    symlinkSync(join(host, 'passwd'), join(root, 'etc', 'shadow'));
    assert.equal(await code(readTenantFile(root, 'etc/shadow', 1024)), 'tenant_fs_not_plain');
    execFileSync('mkfifo', [join(root, 'etc', 'fifo')]);
    assert.equal(await code(readTenantFile(root, 'etc/fifo', 1024)), 'tenant_fs_not_plain');
    assert.equal(await code(readTenantFile(root, 'etc', 1024)), 'tenant_fs_not_plain');
    const linked = tree('reads-linked');
    symlinkSync(host, join(linked, 'etc'));
    assert.equal(await code(readTenantFile(linked, 'etc/passwd', 1024)), 'tenant_fs_not_plain');
    assert.equal(await code(readTenantFile(root, '../host/passwd', 1024)), 'tenant_fs_failed');
    assertHostUntouched();
  });

  it('writes many files without following a link swapped in while it runs', async () => {
    // A running sandbox races the claim: flip /etc between a directory and a link to the host as fast as
    // possible while the files are written; whichever the kernel sees, no host file changes.
    const root = tree('race');
    const flipper = execFileSync('sh', ['-c', `
      cd '${root}' && ( i=0; while [ $i -lt 4000 ]; do mkdir -p d; mv -T d etc 2>/dev/null; ln -sfn '${host}' l; mv -T l etc 2>/dev/null; rm -rf etc; i=$((i+1)); done ) >/dev/null 2>&1 & echo $!`,
    ]).toString().trim();
    try {
      for (let i = 0; i < 200; i++) await writeTenantFiles(root, UID, UID, 0o644, [{ path: 'etc/hostname', content: 'x\n' }]).catch(() => undefined);
    } finally {
      try {
        process.kill(Number(flipper), 'SIGKILL');
      } catch {
        // already done
      }
    }
    assertHostUntouched();
  });

  it('unpacks a hostile layer tar without writing through its links or taking steering xattrs', async () => {
    const root = tree('unpack');
    const tar = join(base, 'hostile.tar');
    // Members that write through links the archive itself made (absolute, relative with .., via `.`), a hard
    // link to a host file, and an overlay redirect xattr: only in-tree effects may remain.
    execFileSync('python3', ['-c', `
import io, tarfile, sys
t = tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT)
def add(name, kind, link='', data=b'', pax=None):
    ti = tarfile.TarInfo(name); ti.type = kind; ti.linkname = link; ti.uid = ti.gid = ${UID}; ti.mode = 0o755
    ti.size = len(data)
    if pax: ti.pax_headers = pax
    t.addfile(ti, io.BytesIO(data) if data else None)
add('etc', tarfile.SYMTYPE, sys.argv[2])
add('etc/cron.d/x', tarfile.REGTYPE, data=b'pwned')
add('rel', tarfile.SYMTYPE, '../host')
add('rel/hostname', tarfile.REGTYPE, data=b'pwned')
add('hl', tarfile.LNKTYPE, sys.argv[2] + '/passwd')
add('redir', tarfile.DIRTYPE, pax={'SCHILY.xattr.trusted.overlay.redirect': '/etc', 'SCHILY.xattr.trusted.overlay.opaque': 'y'})
add('ok/file', tarfile.REGTYPE, data=b'fine')
t.close()
`, tar, host]);
    await extractLayer(tar, root).catch(() => undefined); // tar exits 2 for the refused members
    assertHostUntouched();
    assert.equal(readFileSync(join(root, 'ok', 'file'), 'utf8'), 'fine');
    const xattr = (name: string) =>
      execFileSync('python3', ['-c', 'import os, sys; sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())', join(root, 'redir'), name], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
    assert.equal(xattr('trusted.overlay.opaque'), 'y');
    assert.throws(() => xattr('trusted.overlay.redirect'));
  });
});

const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof TenantFsError ? e.code : String(e)));
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const startTimeOf = (pid: number): string => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]!;
const utsHostname = (pid: number): string => execFileSync('nsenter', ['--target', String(pid), '--uts', 'hostname']).toString().trim();

describe('tenant-fs: the UTS hostname, set without a fork per call', () => {
  const procs: ChildProcess[] = [];
  after(() => {
    for (const p of procs) p.kill('SIGKILL');
  });

  /** A process in a UTS namespace of its own, as a sandbox's envd is. */
  async function inOwnUts(): Promise<number> {
    const p = spawn('unshare', ['--uts', 'sh', '-c', 'hostname before; echo up; exec sleep 600'], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(p);
    await once(p.stdout!, 'data');
    return p.pid!;
  }

  it('sets the hostname in the process\'s namespace only, and the helper goes back to the host\'s', async () => {
    const pid = await inOwnUts();
    const spawnsBefore = tenantFsHelper().spawns;
    for (let i = 0; i < 20; i++) await setUtsHostname(pid, startTimeOf(pid), `sbx-uts-${i}`);
    assert.equal(utsHostname(pid), 'sbx-uts-19');
    assert.equal(hostHostname(), execFileSync('hostname').toString().trim(), 'the host keeps its hostname');
    assert.notEqual(hostHostname(), 'sbx-uts-19');
    const helperPid = tenantFsHelper().pid!;
    assert.equal(readlinkSync(`/proc/${helperPid}/ns/uts`), readlinkSync('/proc/self/ns/uts'), 'the helper serves from the host\'s namespace');
    assert.ok(tenantFsHelper().spawns - spawnsBefore <= 1, 'one helper for all the calls');
  });

  it('refuses a pid whose start time is not the expected one (a recycled pid) and a dead pid, touching nothing', async () => {
    const pid = await inOwnUts();
    assert.equal(await codeOf(setUtsHostname(pid, String(Number(startTimeOf(pid)) - 1), 'hijacked')), 'tenant_fs_process_gone');
    assert.equal(utsHostname(pid), 'before');
    // A host process (this one) that took a sandbox's old pid: the start time keeps the helper out of the host's
    // namespace.
    assert.equal(await codeOf(setUtsHostname(process.pid, '1', 'hijacked')), 'tenant_fs_process_gone');
    assert.notEqual(hostHostname(), 'hijacked');
    const dead = spawn('true');
    await once(dead, 'exit');
    assert.equal(await codeOf(setUtsHostname(dead.pid!, '1', 'hijacked')), 'tenant_fs_process_gone');
    assert.equal(await codeOf(setUtsHostname(pid, startTimeOf(pid), 'bad name; rm -rf /')), 'tenant_fs_failed');
  });
});

describe('tenant-fs: the helper is supervised and its replies are bounded', () => {
  let base: string;
  before(() => {
    base = mkdtempSync(join(tmpdir(), 'tenant-fs-sup-'));
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  function fake(name: string, script: string): string {
    const path = join(base, name);
    writeFileSync(path, `#!/bin/sh\n${script}\n`);
    chmodSync(path, 0o755);
    return path;
  }

  it('is restarted when it dies, and requests in flight at that moment still complete', async () => {
    const root = join(base, 'restart');
    mkdirSync(root);
    const helper = new TenantFsHelper();
    try {
      await writeTenantFiles(root, UID, UID, 0o644, [{ path: 'etc/hostname', content: 'a\n' }], helper);
      const first = helper.pid!;
      process.kill(first, 'SIGKILL');
      // The kill lands while these are queued or half-answered: each is sent once more to the new helper.
      const writes = Array.from({ length: 30 }, (_, i) => writeTenantFiles(root, UID, UID, 0o644, [{ path: `etc/f${i}`, content: `${i}\n` }], helper));
      await Promise.all(writes);
      for (let i = 0; i < 30; i++) assert.equal(readFileSync(join(root, 'etc', `f${i}`), 'utf8'), `${i}\n`);
      assert.notEqual(helper.pid, first);
      assert.ok(!alive(first));
      assert.ok(helper.spawns <= 3, `spawns: ${helper.spawns}`);
      const spawns = helper.spawns;
      for (let i = 0; i < 50; i++) await readTenantFile(root, 'etc/hostname', 16, helper);
      // A reply as large as its bound arrives in many chunks and whole; one byte more is refused by the helper.
      const big = Buffer.alloc(4 << 20, 7);
      big[12345] = 9;
      await writeTenantFiles(root, UID, UID, 0o644, [{ path: 'etc/big', content: big }], helper);
      assert.ok((await readTenantFile(root, 'etc/big', 4 << 20, helper)).equals(big));
      assert.equal(await codeOf(readTenantFile(root, 'etc/big', (4 << 20) - 1, helper)), 'tenant_fs_too_big');
      assert.equal(helper.spawns, spawns, 'no spawn per request');
    } finally {
      helper.stop();
    }
  });

  it('kills a helper that answers with a frame larger than the request allows, before buffering it', async () => {
    // 4 GiB - 1 announced, then endless bytes: a reply must never be read past its bound.
    const helper = new TenantFsHelper(fake('flood', `head -c 12 >/dev/null; printf '\\377\\377\\377\\377'; exec cat /dev/zero`));
    try {
      const before = process.memoryUsage().rss;
      const err = await readTenantFile(base, 'etc/passwd', 1024, helper).then(() => null, (e: unknown) => e);
      assert.ok(err instanceof TenantFsError && err.code === 'tenant_fs_failed' && /frame/.test(err.message), String(err));
      assert.ok(process.memoryUsage().rss - before < 256 << 20, 'the flood was not buffered');
    } finally {
      helper.stop();
    }
    // One byte over an 8-byte read's bound (12 + 2048 + 8 = 2068): 2069 = 0x815, refused at once (not at the deadline).
    const over = new TenantFsHelper(fake('over', `head -c 12 >/dev/null; printf '\\025\\010\\000\\000'; exec sleep 600`), 10_000);
    try {
      const t0 = Date.now();
      const err = await readTenantFile(base, 'etc/passwd', 8, over).then(() => null, (e: unknown) => e);
      assert.ok(err instanceof TenantFsError && /2069-byte frame/.test(err.message), String(err));
      assert.ok(Date.now() - t0 < 5000);
    } finally {
      over.stop();
    }
  });

  it('kills a helper that does not answer within its deadline and fails only that request', async () => {
    const helper = new TenantFsHelper(fake('stuck', 'exec sleep 600'), 300);
    const t0 = Date.now();
    const err = await readTenantFile(base, 'etc/passwd', 8, helper).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof TenantFsError && err.code === 'tenant_fs_failed' && /longer than 300 ms/.test(err.message), String(err));
    assert.ok(Date.now() - t0 < 5000);
    helper.stop();
  });
});

describe('tenant-fs: the internet set changed through libnftables, not an nft process', () => {
  const table = `covtfs${process.pid}`;
  before(() => execFileSync('nft', ['add table inet ' + table + '; add set inet ' + table + ' internet { type ipv4_addr; }']));
  after(() => execFileSync('nft', ['delete', 'table', 'inet', table]));

  it('adds and deletes an element with no spawn, reports nft\'s errors, and keeps its reply channel clean', async () => {
    // Straight to the helper (allowInternet would fall back to `nft` if libnftables were not loadable).
    await runNftCommands(`add element inet ${table} internet { 10.9.9.8 }`);
    assert.equal(await internetSetHas(table, '10.9.9.8'), true);
    const spawns = tenantFsHelper().spawns;
    for (let i = 0; i < 10; i++) await allowInternet(table, `10.9.9.${10 + i}`);
    assert.equal(await internetSetHas(table, '10.9.9.15'), true);
    await denyInternet(table, '10.9.9.15');
    assert.equal(await internetSetHas(table, '10.9.9.15'), false);
    await denyInternet(table, '10.9.9.15'); // absent: ignored, as a destroy needs
    // nft's error text goes back in the reply, never onto the frames.
    const err = await allowInternet(`${table}x`, '10.9.9.9').then(() => null, (e: unknown) => e);
    assert.ok(err instanceof TenantFsError && err.code === 'tenant_fs_failed' && /nft:/.test(err.message), String(err));
    const root = mkdtempSync(join(tmpdir(), 'tenant-fs-nft-'));
    try {
      await writeTenantFiles(root, UID, UID, 0o644, [{ path: 'etc/hostname', content: 'after\n' }]);
      assert.equal((await readTenantFile(root, 'etc/hostname', 64)).toString(), 'after\n');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
    assert.equal(tenantFsHelper().spawns, spawns, 'no process per element change');
  });
});
