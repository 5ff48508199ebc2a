// COPY sources as the host handles them before they reach a build sandbox: a gzip bomb stops at the cap (the
// node's disk is not filled), and symlinks are kept whatever they point at (they are unpacked in the sandbox).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import { buildFileKey, LocalBlobStore } from '@cove/storage';
import { pack as tarPack } from 'tar-stream';
import { pino } from 'pino';
import { createHash } from 'node:crypto';
import { checkCopySource, fetchCopySource } from '../src/build/copy-source.js';
import { CopySourceRejected } from '../src/build/build-errors.js';

async function tarOf(entries: Array<{ name: string; type?: 'file' | 'symlink'; linkname?: string; data?: Buffer }>): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const ended = new Promise<void>((r) => p.on('end', () => r()));
  for (const e of entries) {
    if ((e.type ?? 'file') === 'file') p.entry({ name: e.name, mode: 0o644 }, e.data ?? Buffer.alloc(0));
    else p.entry({ name: e.name, type: 'symlink', linkname: e.linkname, mode: 0o777 });
  }
  p.finalize();
  await ended;
  return Buffer.concat(chunks);
}

describe('COPY sources on the host', () => {
  const dir = mkdtempSync(join(tmpdir(), 'copy-source-'));
  const store = new LocalBlobStore({ root: join(dir, 'store'), logger: pino({ enabled: false }) });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('stops a gzip bomb at the cap instead of filling the disk', async () => {
    const bomb = gzipSync(await tarOf([{ name: 'zeros', data: Buffer.alloc(64 * 1024 * 1024) }]));
    assert.ok(bomb.length < 256 * 1024, `the bomb is small (${bomb.length} bytes)`);
    await store.put(buildFileKey('team1', 'a'.repeat(64)), bomb);
    const dest = join(dir, 'bomb.tar');
    await assert.rejects(fetchCopySource(store, 'team1', 'a'.repeat(64), dest, 1024 * 1024), (err: unknown) => err instanceof CopySourceRejected);
    assert.ok(statSync(dest).size <= 1024 * 1024, 'no more than the cap reached the disk');
  });

  it('keeps relative, absolute and dangling symlinks as links', async () => {
    const tar = await tarOf([
      { name: 'abs', type: 'symlink', linkname: '/etc/shadow' },
      { name: 'dangling', type: 'symlink', linkname: 'nowhere' },
      { name: 'up', type: 'symlink', linkname: '../../../etc' },
    ]);
    await store.put(buildFileKey('team1', 'b'.repeat(64)), gzipSync(tar));
    const dest = join(dir, 'links.tar');
    await fetchCopySource(store, 'team1', 'b'.repeat(64), dest, 1024 * 1024);
    // The SDK's files hash of links: path, lstat mode, target length, target.
    const h = createHash('sha256').update('COPY links /links');
    for (const [path, target] of [['abs', '/etc/shadow'], ['dangling', 'nowhere'], ['up', '../../../etc']] as const) {
      h.update(path).update(String(0o120777)).update(String(target.length)).update(target);
    }
    const check = await checkCopySource(dest, 'links', '/links', h.digest('hex'));
    assert.equal(check.verified, true);
    assert.equal(check.entries, 3);
  });
});
