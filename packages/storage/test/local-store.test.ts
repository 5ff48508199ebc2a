import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LocalBlobStore } from '../src/index.js';
import { describeBlobStore } from './fixtures/blob-store-suite.js';
import { filesIn, silentLogger } from './fixtures/streams.js';

describeBlobStore('local directory', async () => {
  const root = await mkdtemp(join(tmpdir(), 'cove-local-store-'));
  return {
    store: new LocalBlobStore({ root, logger: silentLogger }),
    leftovers: () => filesIn(join(root, 'tmp')),
    close: () => rm(root, { recursive: true, force: true }),
  };
});

describe('LocalBlobStore layout', () => {
  let root: string;
  let store: LocalBlobStore;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'cove-local-layout-'));
    store = new LocalBlobStore({ root, logger: silentLogger });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('keeps objects under objects/ and nothing outside the root', async () => {
    await store.put('templates/b1/rootfs.ext4', Buffer.from('fs'));
    assert.deepEqual((await readdir(root)).sort(), ['objects', 'tmp']);
    assert.equal((await stat(join(root, 'objects', 'templates', 'b1', 'rootfs.ext4'))).size, 2);
    assert.equal(store.pathOf('templates/b1/rootfs.ext4'), join(root, 'objects', 'templates', 'b1', 'rootfs.ext4'));
    assert.deepEqual(await filesIn(join(root, 'tmp')), []);
  });

  it('refuses a key that collides with another key used as a directory', async () => {
    await store.put('coll/a', Buffer.from('file'));
    await assert.rejects(store.put('coll/a/b', Buffer.from('x')), { code: 'invalid_key' });
    assert.equal(await store.head('coll'), undefined);
    await assert.rejects(store.get('coll'), { code: 'not_found' });
    assert.deepEqual(await filesIn(join(root, 'tmp')), []);
  });

  it('removes staging files a crash left behind, and only old ones', async () => {
    await mkdir(join(root, 'tmp'), { recursive: true });
    await writeFile(join(root, 'tmp', 'crashed'), 'partial');
    await writeFile(join(root, 'tmp', 'in-flight'), 'partial');
    const dayAgo = new Date(Date.now() - 86_400_000);
    await utimes(join(root, 'tmp', 'crashed'), dayAgo, dayAgo);
    assert.equal(await store.removeStaleTemp(3_600_000), 1);
    assert.deepEqual(await filesIn(join(root, 'tmp')), ['in-flight']);
    await rm(join(root, 'tmp', 'in-flight'));
  });
});
