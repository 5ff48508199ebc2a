// A node-local, size-bounded cache in front of a remote store (DESIGN.md §3): orchestrators read template
// artifacts many times, and from local disk rather than the bucket. Objects are cached whole (a range read
// fetches the object once, then serves the range locally), which suits the immutable, content-addressed or
// build-id-addressed keys this library stores; a put or delete through this wrapper invalidates the local
// copy, but a write made by another node to an existing key is not seen (keys are immutable by convention).
//
// Files are named `<sha256(key)>-<random>` so a replaced object never overwrites a file somebody is still
// reading: readers hold a lease (pin) and eviction (LRU by bytes) skips pinned entries; a stale pinned file is
// deleted when its last lease is released. Concurrent misses on one key share a single remote fetch.

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type {
  BlobBody,
  BlobInfo,
  BlobStore,
  GetOptions,
  PutOptions,
  PutResult,
  StagedBlob,
} from './blob-store.js';
import { BackendError, InvalidRange, isStorageError } from './errors.js';
import { FILE_CHUNK_BYTES } from './file-chunks.js';
import { checkKey } from './keys.js';

/** Options of CachedStore.open. */
export interface CachedStoreOptions {
  /** The store being cached (normally an S3BlobStore). */
  remote: BlobStore;
  /** Cache directory on local disk; created if missing, its contents are adopted on open. */
  dir: string;
  /** Upper bound on cached bytes; exceeded only while every entry is in use. */
  maxBytes: number;
  logger: Logger;
}

/** A pinned local copy of an object: the file stays until `release` is called. */
export interface CacheLease {
  readonly path: string;
  readonly size: number;
  /**
   * Unpins the file; resolves once anything the release made evictable has been removed. Calling it more
   * than once has no further effect.
   */
  release(): Promise<void>;
}

/** Counters for diagnostics and tests. */
export interface CacheStats {
  entries: number;
  bytes: number;
  pinned: number;
  hits: number;
  misses: number;
  evictions: number;
}

interface Entry {
  id: string;
  file: string;
  size: number;
  pins: number;
  stale: boolean;
}

interface Flight {
  waiters: number;
  promise: Promise<Entry>;
}

/** BlobStore wrapper with a bounded LRU disk cache for reads. */
export class CachedStore implements BlobStore {
  readonly driver = 'cached' as const;
  /** Entries in LRU order: the first is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Flight>();
  private readonly staleFiles = new Set<Entry>();
  private bytes = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private lastStamp = 0;
  private readonly objectsDir: string;
  private readonly tmpDir: string;
  private readonly remote: BlobStore;
  private readonly maxBytes: number;
  private readonly logger: Logger;

  private constructor(options: CachedStoreOptions) {
    this.remote = options.remote;
    this.maxBytes = options.maxBytes;
    this.objectsDir = join(options.dir, 'objects');
    this.tmpDir = join(options.dir, 'tmp');
    this.logger = options.logger.child({ storage: 'cache' });
  }

  /** Opens the cache, adopting files left by a previous run (oldest first) and evicting down to the bound. */
  static async open(options: CachedStoreOptions): Promise<CachedStore> {
    const cache = new CachedStore(options);
    await rm(cache.tmpDir, { recursive: true, force: true });
    await mkdir(cache.tmpDir, { recursive: true });
    await mkdir(cache.objectsDir, { recursive: true });
    const found: { entry: Entry; mtime: number }[] = [];
    for (const name of await readdir(cache.objectsDir)) {
      const file = join(cache.objectsDir, name);
      const match = /^([0-9a-f]{64})-[0-9a-f]+$/.exec(name);
      const st = await stat(file);
      if (match === null || !st.isFile()) {
        await rm(file, { recursive: true, force: true });
        continue;
      }
      found.push({ entry: { id: match[1], file, size: st.size, pins: 0, stale: false }, mtime: st.mtimeMs });
    }
    found.sort((a, b) => a.mtime - b.mtime);
    cache.lastStamp = found.at(-1)?.mtime ?? 0;
    for (const { entry } of found) {
      const older = cache.entries.get(entry.id);
      if (older !== undefined) await cache.drop(older);
      cache.entries.set(entry.id, entry);
      cache.bytes += entry.size;
    }
    await cache.evict();
    return cache;
  }

  /** Current counters. */
  stats(): CacheStats {
    let pinned = 0;
    for (const e of this.entries.values()) if (e.pins > 0) pinned++;
    return {
      entries: this.entries.size,
      bytes: this.bytes,
      pinned,
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
    };
  }

  /** Pins a local copy of `key`, fetching it from the remote store on a miss. Throws BlobNotFound. */
  async acquire(key: string): Promise<CacheLease> {
    const id = createHash('sha256').update(checkKey(key)).digest('hex');
    const cached = this.entries.get(id);
    if (cached !== undefined) {
      this.hits++;
      cached.pins++;
      this.entries.delete(id);
      this.entries.set(id, cached);
      const lease = this.lease(cached);
      await this.stamp(cached.file);
      return lease;
    }
    let flight = this.inflight.get(id);
    if (flight === undefined) {
      this.misses++;
      const f: Flight = { waiters: 0, promise: Promise.resolve(undefined as never) };
      f.promise = this.fetch(key, id, f);
      flight = f;
      this.inflight.set(id, f);
    }
    flight.waiters++;
    const entry = await flight.promise;
    await this.evict();
    return this.lease(entry);
  }

  private async fetch(key: string, id: string, flight: Flight): Promise<Entry> {
    const tmp = join(this.tmpDir, randomBytes(8).toString('hex'));
    const file = join(this.objectsDir, `${id}-${randomBytes(8).toString('hex')}`);
    try {
      const source = await this.remote.get(key);
      let size = 0;
      await pipeline(
        source,
        async function* (chunks: AsyncIterable<Buffer>) {
          for await (const chunk of chunks) {
            size += chunk.length;
            yield chunk;
          }
        },
        createWriteStream(tmp, { flags: 'wx', mode: 0o644, highWaterMark: FILE_CHUNK_BYTES }),
      );
      await rename(tmp, file);
      await this.stamp(file);
      // Synchronous from here on: every waiter registered so far gets its pin before anyone can evict.
      const entry: Entry = { id, file, size, pins: flight.waiters, stale: false };
      this.entries.set(id, entry);
      this.bytes += size;
      this.inflight.delete(id);
      this.logger.debug({ key, size }, 'cached');
      return entry;
    } catch (err) {
      this.inflight.delete(id);
      await rm(tmp, { force: true });
      if (isStorageError(err)) throw err;
      throw new BackendError('cache fetch', { cause: err });
    }
  }

  /**
   * Records a use in the file's mtime, which is how LRU order survives a restart. File timestamps come from
   * a coarse kernel clock (several uses can share one tick), so each stamp is forced past the previous one.
   */
  private async stamp(file: string): Promise<void> {
    this.lastStamp = Math.max(Date.now(), this.lastStamp + 1);
    const when = new Date(this.lastStamp);
    await utimes(file, when, when).catch((err: unknown) => this.logger.debug({ err, file }, 'cache stamp failed'));
  }

  private lease(entry: Entry): CacheLease {
    let released = false;
    return {
      path: entry.file,
      size: entry.size,
      release: async (): Promise<void> => {
        if (released) return;
        released = true;
        entry.pins--;
        if (entry.pins > 0) return;
        if (entry.stale) {
          this.staleFiles.delete(entry);
          this.bytes -= entry.size;
          await rm(entry.file, { force: true });
        }
        await this.evict();
      },
    };
  }

  /** Evicts least recently used, unpinned entries until the cache fits its bound. */
  private async evict(): Promise<void> {
    if (this.bytes <= this.maxBytes) return;
    const victims: Entry[] = [];
    let bytes = this.bytes;
    for (const entry of this.entries.values()) {
      if (bytes <= this.maxBytes) break;
      if (entry.pins > 0) continue;
      victims.push(entry);
      bytes -= entry.size;
    }
    for (const entry of victims) {
      this.entries.delete(entry.id);
      this.bytes -= entry.size;
      this.evictions++;
    }
    if (this.bytes > this.maxBytes) {
      this.logger.warn({ bytes: this.bytes, maxBytes: this.maxBytes }, 'cache over its bound: entries in use');
    }
    await Promise.all(victims.map((e) => rm(e.file, { force: true })));
  }

  /** Forgets an entry: removed now if unused, else when its last lease is released. */
  private async drop(entry: Entry): Promise<void> {
    this.entries.delete(entry.id);
    if (entry.pins > 0) {
      entry.stale = true;
      this.staleFiles.add(entry);
      return;
    }
    this.bytes -= entry.size;
    await rm(entry.file, { force: true });
  }

  private async invalidate(key: string): Promise<void> {
    const id = createHash('sha256').update(checkKey(key)).digest('hex');
    const entry = this.entries.get(id);
    if (entry !== undefined) await this.drop(entry);
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const lease = await this.acquire(key);
    const range = options.range;
    let start = 0;
    let end = lease.size - 1;
    if (range !== undefined) {
      if (range.start < 0 || range.start >= lease.size || (range.end !== undefined && range.end < range.start)) {
        await lease.release();
        throw new InvalidRange(key);
      }
      start = range.start;
      end = Math.min(range.end ?? lease.size - 1, lease.size - 1);
    }
    const stream = lease.size === 0 ? createReadStream(lease.path) : createReadStream(lease.path, { start, end, highWaterMark: FILE_CHUNK_BYTES });
    stream.once('close', () => {
      lease.release().catch((err: unknown) => this.logger.warn({ err, key }, 'cache release failed'));
    });
    return stream;
  }

  async put(key: string, body: BlobBody, options?: PutOptions): Promise<PutResult> {
    const result = await this.remote.put(key, body, options);
    await this.invalidate(key);
    return result;
  }

  async stage(body: BlobBody, options?: PutOptions): Promise<StagedBlob> {
    const staged = await this.remote.stage(body, options);
    return {
      size: staged.size,
      sha256: staged.sha256,
      commit: async (key: string) => {
        const result = await staged.commit(key);
        await this.invalidate(key);
        return result;
      },
      discard: () => staged.discard(),
    };
  }

  head(key: string): Promise<BlobInfo | undefined> {
    return this.remote.head(key);
  }

  exists(key: string): Promise<boolean> {
    return this.remote.exists(key);
  }

  async delete(key: string): Promise<void> {
    await this.remote.delete(key);
    await this.invalidate(key);
  }

  list(prefix: string): AsyncIterable<BlobInfo> {
    return this.remote.list(prefix);
  }

  async copy(from: string, to: string): Promise<void> {
    await this.remote.copy(from, to);
    await this.invalidate(to);
  }
}
