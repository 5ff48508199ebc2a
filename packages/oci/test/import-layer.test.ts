import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { getAttributeSync } from 'fs-xattr';
import { importLayer, UnsafeLayer } from '../src/index.js';
import { makeTar, type FixtureEntry } from './tar-fixture.js';

const OFFSET = 100000;
const root = mkdtempSync(join(tmpdir(), 'cove-oci-import-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/** A fresh dest dir plus an "outside" dir beside it holding a victim file. */
function dirs(): { dest: string; outside: string } {
  const base = join(root, String(n++));
  const dest = join(base, 'dest');
  const outside = join(base, 'outside');
  mkdirSync(dest, { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, 'victim'), 'original');
  return { dest, outside };
}

async function run(entries: FixtureEntry[], dest: string, gzip = false) {
  return importLayer(Readable.from([await makeTar(entries, gzip)]), dest, { idOffset: OFFSET });
}

function assertOutsideUntouched(outside: string): void {
  assert.deepEqual(readdirSync(outside), ['victim']);
  assert.equal(readFileSync(join(outside, 'victim'), 'utf8'), 'original');
  assert.equal(statSync(outside).mode & 0o7777, 0o755);
  assert.throws(() => getAttributeSync(outside, 'trusted.overlay.opaque'));
}

test('a gzipped layer becomes an overlay upper dir: owners shifted, modes, links, whiteouts, opaque dirs', async () => {
  const { dest } = dirs();
  const res = await run(
    [
      { name: './', type: 'directory', mode: 0o755 },
      { name: './usr/', type: 'directory' },
      { name: './usr/bin/', type: 'directory' },
      { name: './usr/bin/sudo', content: 'ELF', mode: 0o4755 },
      { name: './usr/bin/crontab', content: 'ELF2', mode: 0o2755, gid: 102 },
      { name: './usr/bin/sudoedit', type: 'link', linkname: './usr/bin/sudo' },
      { name: './bin', type: 'symlink', linkname: 'usr/bin' },
      { name: './etc/alternatives/awk', type: 'symlink', linkname: '/usr/bin/mawk' },
      { name: './home/user/', type: 'directory', uid: 1000, gid: 1000, mode: 0o750 },
      { name: './home/user/.bashrc', content: 'PS1=x', uid: 1000, gid: 1000, mode: 0o600 },
      { name: './tmp/', type: 'directory', mode: 0o1777 },
      { name: './etc/.wh.motd', content: '' },
      { name: './var/cache/.wh..wh..opq', content: '' },
      { name: './var/cache/kept', content: 'k' },
      { name: './run/ctl', type: 'fifo', mode: 0o600 },
      { name: './dev/null', type: 'character-device', devmajor: 1, devminor: 3 },
      { name: './etc/hostname', content: 'leaked' },
      { name: './etc/resolv.conf', content: 'nameserver 1.1.1.1' },
    ],
    dest,
    true,
  );
  assert.equal(res.whiteouts, 1);
  assert.equal(res.opaqueDirs, 1);
  assert.equal(res.skippedDevices, 1);

  const sudo = lstatSync(join(dest, 'usr/bin/sudo'));
  assert.equal(sudo.mode & 0o7777, 0o4755, 'setuid kept after chown');
  assert.equal(sudo.uid, OFFSET);
  assert.equal(readFileSync(join(dest, 'usr/bin/sudo'), 'utf8'), 'ELF');
  const crontab = lstatSync(join(dest, 'usr/bin/crontab'));
  assert.equal(crontab.mode & 0o7777, 0o2755);
  assert.equal(crontab.gid, OFFSET + 102);
  assert.equal(lstatSync(join(dest, 'usr/bin/sudoedit')).ino, sudo.ino, 'hard link');
  assert.equal(readlinkSync(join(dest, 'bin')), 'usr/bin');
  assert.equal(readlinkSync(join(dest, 'etc/alternatives/awk')), '/usr/bin/mawk', 'absolute symlink kept verbatim');
  assert.equal(lstatSync(join(dest, 'etc/alternatives/awk')).uid, OFFSET);
  const home = lstatSync(join(dest, 'home/user'));
  assert.deepEqual([home.uid, home.gid, home.mode & 0o7777], [OFFSET + 1000, OFFSET + 1000, 0o750]);
  assert.equal(lstatSync(join(dest, 'home/user/.bashrc')).uid, OFFSET + 1000);
  assert.equal(lstatSync(join(dest, 'tmp')).mode & 0o7777, 0o1777);
  assert.equal(lstatSync(join(dest, 'home/user/.bashrc')).mtimeMs, 1_700_000_000_000);
  // Implicit parents (etc/, var/, run/) belong to the namespace's root.
  assert.equal(lstatSync(join(dest, 'etc')).uid, OFFSET);

  const wh = lstatSync(join(dest, 'etc/motd'));
  assert.ok(wh.isCharacterDevice(), 'whiteout is a character device');
  assert.equal(wh.rdev, 0, 'device 0/0');
  assert.ok(!existsSync(join(dest, 'etc/.wh.motd')));
  assert.equal(getAttributeSync(join(dest, 'var/cache'), 'trusted.overlay.opaque').toString(), 'y');
  assert.ok(!existsSync(join(dest, 'var/cache/.wh..wh..opq')));
  assert.equal(readFileSync(join(dest, 'var/cache/kept'), 'utf8'), 'k');
  assert.ok(lstatSync(join(dest, 'run/ctl')).isFIFO());
  assert.ok(!existsSync(join(dest, 'dev/null')), 'device nodes are not imported');
  assert.ok(!existsSync(join(dest, 'etc/hostname')), 'runtime files never enter a layer');
  assert.ok(!existsSync(join(dest, 'etc/resolv.conf')));
});

test('a plain tar works too, and later entries replace earlier ones', async () => {
  const { dest } = dirs();
  await run(
    [
      { name: 'a', content: 'first' },
      { name: 'a', content: 'second' },
      { name: 'd', content: 'file' },
      { name: 'd', type: 'directory' },
      { name: 'd/x', content: 'x' },
    ],
    dest,
  );
  assert.equal(readFileSync(join(dest, 'a'), 'utf8'), 'second');
  assert.ok(lstatSync(join(dest, 'd')).isDirectory());
});

const hostile: Array<[string, (outside: string) => FixtureEntry[]]> = [
  ['dot-dot path', () => [{ name: '../outside/pwned', content: 'x' }]],
  ['dot-dot in the middle', () => [{ name: 'a/../../outside/pwned', content: 'x' }]],
  ['write through an absolute symlink parent', (o) => [{ name: 'l', type: 'symlink', linkname: o }, { name: 'l/pwned', content: 'x' }]],
  ['write through a relative symlink parent', () => [{ name: 'l', type: 'symlink', linkname: '../outside' }, { name: 'l/pwned', content: 'x' }]],
  ['deep symlink parent', (o) => [{ name: 'a/b', type: 'symlink', linkname: o }, { name: 'a/b/c/d', content: 'x' }]],
  ['hard link with ..', () => [{ name: 'hl', type: 'link', linkname: '../outside/victim' }]],
  ['hard link to a host path', () => [{ name: 'hl', type: 'link', linkname: '/etc/passwd' }]],
  ['hard link through a symlink parent', (o) => [{ name: 'l', type: 'symlink', linkname: o }, { name: 'hl', type: 'link', linkname: 'l/victim' }]],
  ['opaque marker through a symlink', (o) => [{ name: 'l', type: 'symlink', linkname: o }, { name: 'l/.wh..wh..opq', content: '' }]],
  ['whiteout through a symlink', (o) => [{ name: 'l', type: 'symlink', linkname: o }, { name: 'l/.wh.victim', content: '' }]],
  ['whiteout of ..', () => [{ name: 'sub/.wh...', content: '' }]],
  ['directory through a symlink parent', (o) => [{ name: 'l', type: 'symlink', linkname: o }, { name: 'l/newdir', type: 'directory', mode: 0o777 }]],
  ['owner outside the id map', () => [{ name: 'f', content: 'x', uid: 70000 }]],
];

for (const [what, entries] of hostile) {
  test(`hostile layer refused: ${what}`, async () => {
    const { dest, outside } = dirs();
    await assert.rejects(run(entries(outside), dest), UnsafeLayer);
    assertOutsideUntouched(outside);
  });
}

test('entries replace a planted symlink instead of writing through it', async () => {
  const { dest, outside } = dirs();
  await run(
    [
      { name: 'f', type: 'symlink', linkname: join(outside, 'victim') },
      { name: 'f', content: 'replaced', mode: 0o666 },
      { name: 'd', type: 'symlink', linkname: outside },
      { name: 'd', type: 'directory', mode: 0o777 },
      { name: 's', type: 'symlink', linkname: join(outside, 'victim') },
      { name: 'hl', type: 'link', linkname: 's' },
    ],
    dest,
  );
  assert.equal(readFileSync(join(dest, 'f'), 'utf8'), 'replaced');
  assert.ok(lstatSync(join(dest, 'd')).isDirectory() && !lstatSync(join(dest, 'd')).isSymbolicLink());
  // A hard link to a symlink is a second name of the symlink, not of its target.
  assert.ok(lstatSync(join(dest, 'hl')).isSymbolicLink());
  assertOutsideUntouched(outside);
});

test('a truncated or corrupt tar fails', async () => {
  const { dest } = dirs();
  const tar = await makeTar([{ name: 'big', content: 'y'.repeat(5000) }], true);
  await assert.rejects(importLayer(Readable.from([tar.subarray(0, tar.length - 40)]), dest, { idOffset: OFFSET }));
});
