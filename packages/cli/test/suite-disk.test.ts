// `cove test`'s disk preflight: the free space it reports is the filesystem's that will hold the path, found through
// the nearest existing parent (the nodes' data dir does not exist before the first `cove up`).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freeBytes } from '../src/test-suite.js';

const isRoot = process.getuid?.() === 0;

describe('the suite\'s disk preflight', { skip: isRoot ? false : 'needs root (mounts a small tmpfs)' }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cove-disk-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'cove-disk-test', dir]);
  });
  after(() => {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });

  test('reads the free space of the filesystem that will hold a path not made yet', () => {
    assert.equal(freeBytes(dir), 8 * 1024 * 1024);
    assert.equal(freeBytes(join(dir, 'not', 'made', 'yet')), 8 * 1024 * 1024);
    writeFileSync(join(dir, 'two-mib'), Buffer.alloc(2 * 1024 * 1024, 1));
    assert.equal(freeBytes(join(dir, 'not', 'made', 'yet')), 6 * 1024 * 1024);
  });
});
