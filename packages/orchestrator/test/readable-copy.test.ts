// The readable copies CRIU maps restored executables from (checkpoint/criu.ts readableCopy). A burst of resumes
// makes them concurrently on a fresh node; `cove bench --soak` found every later resume of that node failing
// ("Can't open vma") after such a burst left the copy 0711, as its source is.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readableCopy } from '../src/checkpoint/criu.js';

const dir = await mkdtemp(join(tmpdir(), 'cove-readable-copy-'));
after(() => rm(dir, { recursive: true, force: true }));

/** An execute-only source, as the lent binaries are (exec-only-binaries.ts), large enough that copies overlap. */
async function source(name: string): Promise<{ path: string; bytes: Buffer }> {
  const path = join(dir, name);
  const bytes = randomBytes(8 << 20);
  await writeFile(path, bytes);
  await chmod(path, 0o711);
  return { path, bytes };
}

test('sixteen concurrent copies of one binary all succeed and publish one complete 0755 copy', async () => {
  const src = await source('node');
  const out = join(dir, 'restore');
  const results = await Promise.allSettled(Array.from({ length: 16 }, () => readableCopy(src.path, out)));
  assert.deepEqual(
    results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)),
    [],
    'no copy failed',
  );
  const dest = join(out, 'node');
  assert.equal((await stat(dest)).mode & 0o777, 0o755);
  assert.ok((await readFile(dest)).equals(src.bytes), 'the published copy is whole');
  assert.deepEqual(await readdir(out), ['node'], 'no temp file left behind');
});

test('a copy left 0711 (same size, newer time) is replaced by a readable one', async () => {
  const src = await source('tini');
  const out = join(dir, 'stale');
  const dest = await readableCopy(src.path, out);
  // What the race published: the right bytes, the source's mode.
  await rm(dest);
  await copyFile(src.path, dest);
  await chmod(dest, 0o711);
  const later = new Date(Date.now() + 60_000);
  await utimes(dest, later, later);
  assert.equal(await readableCopy(src.path, out), dest);
  assert.equal((await stat(dest)).mode & 0o777, 0o755);
  assert.ok((await readFile(dest)).equals(src.bytes));
});
