// CachedStore over a real remote store (a LocalBlobStore in its own directory). CountingStore is a thin
// decorator that counts the remote reads, so fetch coalescing and cache hits can be observed.
import assert from 'node:assert/strict';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import {
  CachedStore,
  LocalBlobStore,
  type BlobBody,
  type BlobInfo,
  type BlobStore,
  type GetOptions,
  type PutOptions,
  type PutResult,
  type StagedBlob,
} from '../src/index.js';
import { filesIn, patternBytes, readAll, silentLogger } from './fixtures/streams.js';

class CountingStore implements BlobStore {
  readonly driver = 'local' as const;
  gets = 0;
  constructor(private readonly inner: BlobStore) {}
  get(key: string, options?: GetOptions): Promise<Readable> {
    this.gets++;
    return this.inner.get(key, options);
  }
  put(key: string, body: BlobBody, options?: PutOptions): Promise<PutResult> {
    return this.inner.put(key, body, options);
  }
  stage(body: BlobBody, options?: PutOptions): Promise<StagedBlob> {
    return this.inner.stage(body, options);
  }
  head(key: string): Promise<BlobInfo | undefined> {
    return this.inner.head(key);
  }
  exists(key: string): Promise<boolean> {
    return this.inner.exists(key);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  list(prefix: string): AsyncIterable<BlobInfo> {
    return this.inner.list(prefix);
  }
  copy(from: string, to: string): Promise<void> {
    return this.inner.copy(from, to);
  }
}

const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

describe('CachedStore', () => {
  let dir: string;
  let remote: CountingStore;
  let cacheN = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cove-cache-'));
    remote = new CountingStore(new LocalBlobStore({ root: join(dir, 'remote'), logger: silentLogger }));
    for (const [key, seed] of [['a', 1], ['b', 2], ['c', 3], ['d', 4]] as const) {
      await remote.put(`obj/${key}`, await patternBytes(1000, seed));
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));
  beforeEach(() => {
    remote.gets = 0;
  });

  const openCache = (maxBytes: number, name = `c${cacheN++}`) =>
    CachedStore.open({ remote, dir: join(dir, name), maxBytes, logger: silentLogger });

  it('serves repeated reads from disk after one remote fetch', async () => {
    const cache = await openCache(10_000);
    assert.deepEqual(await readAll(await cache.get('obj/a')), await patternBytes(1000, 1));
    assert.deepEqual(await readAll(await cache.get('obj/a')), await patternBytes(1000, 1));
    const range = await readAll(await cache.get('obj/a', { range: { start: 10, end: 19 } }));
    assert.deepEqual(range, (await patternBytes(1000, 1)).subarray(10, 20));
    assert.equal(remote.gets, 1);
    assert.deepEqual(cache.stats(), { entries: 1, bytes: 1000, pinned: 0, hits: 2, misses: 1, evictions: 0 });
    await assert.rejects(cache.get('obj/a', { range: { start: 1000 } }), { code: 'invalid_range' });
    assert.equal(cache.stats().pinned, 0);
  });

  it('coalesces concurrent misses of one key into a single remote fetch', async () => {
    const cache = await openCache(10_000);
    const leases = await Promise.all(Array.from({ length: 8 }, () => cache.acquire('obj/b')));
    assert.equal(remote.gets, 1);
    assert.ok(leases.every((l) => l.path === leases[0]!.path && l.size === 1000));
    assert.equal(cache.stats().pinned, 1);
    for (const lease of leases) await lease.release();
    assert.equal(cache.stats().pinned, 0);
    assert.equal(cache.stats().misses, 1);
  });

  it('reports a missing key as not_found to every waiter and caches nothing', async () => {
    const cache = await openCache(10_000);
    const results = await Promise.allSettled([cache.acquire('obj/none'), cache.acquire('obj/none')]);
    assert.deepEqual(
      results.map((r) => r.status === 'rejected' && (r.reason as { code: string }).code),
      ['not_found', 'not_found'],
    );
    assert.equal(remote.gets, 1);
    await assert.rejects(cache.get('obj/none'), { code: 'not_found' });
    assert.equal(remote.gets, 2);
    assert.equal(cache.stats().entries, 0);
    assert.deepEqual(await filesIn(join(dir, `c${cacheN - 1}`, 'tmp')), []);
  });

  it('stays within its byte bound by evicting the least recently used entry', async () => {
    const cache = await openCache(2500);
    await readAll(await cache.get('obj/a'));
    await readAll(await cache.get('obj/b'));
    await readAll(await cache.get('obj/a')); // a is now more recent than b
    await readAll(await cache.get('obj/c'));
    assert.deepEqual(
      { entries: cache.stats().entries, bytes: cache.stats().bytes, evictions: cache.stats().evictions },
      { entries: 2, bytes: 2000, evictions: 1 },
    );
    remote.gets = 0;
    await readAll(await cache.get('obj/a'));
    await readAll(await cache.get('obj/c'));
    assert.equal(remote.gets, 0, 'a and c are still cached');
    await readAll(await cache.get('obj/b'));
    assert.equal(remote.gets, 1, 'b was evicted');
    assert.ok(cache.stats().bytes <= 2500);
  });

  it('never evicts a file that is in use', async () => {
    const cache = await openCache(1500);
    const pinned = await cache.acquire('obj/a');
    const stream = await cache.get('obj/b'); // opened, not yet read: also in use
    await readAll(await cache.get('obj/c'));
    await readAll(await cache.get('obj/d'));
    assert.equal(await exists(pinned.path), true);
    assert.ok(cache.stats().bytes > 1500, 'over the bound only while everything left is in use');
    assert.deepEqual(await readAll(stream), await patternBytes(1000, 2));
    await pinned.release();
    assert.equal(await exists(pinned.path), true, 'a fits the bound once b is gone, so it stays');
    await readAll(await cache.get('obj/c')); // needs room: a is now the least recently used, unpinned entry
    assert.equal(await exists(pinned.path), false);
    assert.ok(cache.stats().bytes <= 1500);
  });

  it('invalidates its copy when the object is replaced or deleted through it', async () => {
    const cache = await openCache(10_000);
    await cache.put('obj/mutable', Buffer.from('v1'));
    assert.equal((await readAll(await cache.get('obj/mutable'))).toString(), 'v1');
    const lease = await cache.acquire('obj/mutable');
    await cache.put('obj/mutable', Buffer.from('v2'));
    assert.equal((await readAll(await cache.get('obj/mutable'))).toString(), 'v2');
    assert.equal(await exists(lease.path), true, 'the old file stays while leased');
    await lease.release();
    assert.equal(await exists(lease.path), false);
    await cache.delete('obj/mutable');
    await assert.rejects(cache.get('obj/mutable'), { code: 'not_found' });
    assert.equal(cache.stats().bytes, 0);
  });

  it('adopts what a previous run left, oldest first, within the new bound', async () => {
    const first = await openCache(10_000, 'reopen');
    for (const k of ['a', 'b', 'c']) await readAll(await first.get(`obj/${k}`));
    const second = await openCache(2000, 'reopen');
    assert.deepEqual({ entries: second.stats().entries, bytes: second.stats().bytes }, { entries: 2, bytes: 2000 });
    remote.gets = 0;
    await readAll(await second.get('obj/c'));
    assert.equal(remote.gets, 0);
  });
});
