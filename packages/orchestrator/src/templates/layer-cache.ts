// The node's layer cache (docs/template-builds.md, "Orchestrator"): layers from cluster storage, extracted once
// into `<dir>/<first 16 hex of the digest>` (dir = `<dataDir>/l`, short on purpose: a stack of them has to fit in
// the overlay's one-page mount options) and used as overlay lower dirs as they are.
//
// - A layer is downloaded into a temp file and its bytes checked against the digest (from an authenticated
//   build manifest) before tar ever sees them; then extracted into a temp dir and renamed into place after its
//   `<16 hex>.json` record: a crash never leaves a half layer under a real name.
// - Concurrent ensure() of one digest share one download and extraction.
// - Leases (acquire/release) pin layers while a caller boots on them; once a slot's record names them, the
//   runtime's layersInUse() keeps them (also across restarts). Neither kind is ever evicted.
// - Beyond maxBytes (tar bytes, close to what extraction takes), the least recently used free layers go.

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { chmod, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobNotFound, downloadVerified, HashMismatch, isSha256Hex, type BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import { extractLayer } from '../sandbox/layer-export.js';
import { OnceUntilFailure } from '../once-until-failure.js';

export class LayerMissing extends Error {
  readonly code = 'layer_missing';
  constructor(readonly digest: string, options?: ErrorOptions) {
    super(`layer ${digest} is not in cluster storage`, options);
    this.name = new.target.name;
  }
}

export class LayerCorrupt extends Error {
  readonly code = 'layer_corrupt';
  constructor(readonly digest: string, reason: string, options?: ErrorOptions) {
    super(`layer ${digest} is unusable: ${reason}`, options);
    this.name = new.target.name;
  }
}

export interface LayerCacheOptions {
  /** Cache directory (`<dataDir>/l`). */
  dir: string;
  store: BlobStore;
  /** Evict beyond this many bytes (COVE_LAYER_CACHE_MB). */
  maxBytes: number;
  /** Layer dirs slots stack right now (the runtime's layersInUse()); never evicted. */
  inUse?: () => Promise<Iterable<string>>;
  log: Logger;
}

/** Pins layers against eviction until released (idempotent). */
export interface LayerLease {
  release(): void;
}

interface Entry {
  digest: string;
  dir: string;
  size: number;
  lastUsed: number;
}

export interface LayerCacheStats {
  layers: number;
  bytes: number;
  maxBytes: number;
  pinned: number;
}


export class LayerCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<string>>();
  private readonly pins = new Map<string, number>();
  private readonly loaded = new OnceUntilFailure(() => this.load());
  private evicting: Promise<void> = Promise.resolve();
  private clock = 0;

  constructor(private readonly opts: LayerCacheOptions) {}

  /** Where the layer with this digest lives once present. */
  dirOf(digest: string): string {
    return join(this.opts.dir, digest.slice(0, 16));
  }

  /** Loads what a previous run left: complete layers are kept, leftovers of crashed extractions removed. */
  init(): Promise<void> {
    return this.loaded.run();
  }

  private async load(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true, mode: 0o711 });
    const names = await readdir(this.opts.dir);
    const inUse = new Set(await this.opts.inUse?.() ?? []);
    for (const name of names) {
      const path = join(this.opts.dir, name);
      if (name.startsWith('.tmp-')) {
        await rm(path, { recursive: true, force: true });
        continue;
      }
      if (!/^[0-9a-f]{16}\.json$/.test(name)) continue;
      const dir = path.slice(0, -'.json'.length);
      try {
        const meta = JSON.parse(await readFile(path, 'utf8')) as { digest: string; size: number };
        const st = await stat(path);
        if (!isSha256Hex(meta.digest) || !(await stat(dir)).isDirectory()) throw new Error('incomplete');
        this.entries.set(meta.digest, { digest: meta.digest, dir, size: meta.size, lastUsed: st.mtimeMs });
      } catch {
        await rm(path, { force: true });
      }
    }
    // Directories without a record never finished (the record is written before the rename).
    for (const name of names) {
      if (!/^[0-9a-f]{16}$/.test(name)) continue;
      const dir = join(this.opts.dir, name);
      if ([...this.entries.values()].some((e) => e.dir === dir) || inUse.has(dir)) continue;
      await rm(dir, { recursive: true, force: true });
    }
    this.opts.log.info({ layers: this.entries.size, bytes: this.bytes() }, 'layer cache loaded');
  }

  private bytes(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.size;
    return n;
  }

  stats(): LayerCacheStats {
    return { layers: this.entries.size, bytes: this.bytes(), maxBytes: this.opts.maxBytes, pinned: this.pins.size };
  }

  /** True when the layer is extracted on this node. */
  has(digest: string): boolean {
    return this.entries.has(digest);
  }

  /**
   * Pins the layers (present or not yet) against eviction. Take the lease before ensure() and keep it until
   * the slot booted on them exists (its record then protects them), or for as long as you use the dirs.
   */
  acquire(digests: readonly string[]): LayerLease {
    const held = [...digests];
    for (const d of held) this.pins.set(d, (this.pins.get(d) ?? 0) + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        for (const d of held) {
          const n = (this.pins.get(d) ?? 1) - 1;
          if (n <= 0) this.pins.delete(d);
          else this.pins.set(d, n);
        }
        this.scheduleEviction();
      },
    };
  }

  /** The layer's directory, fetching and extracting it first if needed. LayerMissing / LayerCorrupt otherwise. */
  async ensure(digest: string): Promise<string> {
    if (!isSha256Hex(digest)) throw new LayerCorrupt(String(digest), 'not a sha256 digest');
    await this.init();
    const hit = this.touch(digest);
    if (hit) return hit;
    let p = this.inflight.get(digest);
    if (!p) {
      p = (async () => {
        // An eviction in progress may still be removing a dir of this name.
        await this.evicting;
        const spool = this.tempName('tar');
        try {
          try {
            await downloadVerified(this.opts.store, digest, spool);
          } catch (err) {
            if (err instanceof BlobNotFound) throw new LayerMissing(digest, { cause: err });
            if (err instanceof HashMismatch) throw new LayerCorrupt(digest, `content hashes to ${err.actual}`, { cause: err });
            throw err;
          }
          return await this.extract(digest, spool);
        } finally {
          await rm(spool, { force: true });
        }
      })().finally(() => this.settled(digest));
      this.inflight.set(digest, p);
    }
    return p;
  }

  /**
   * Adds a layer this node just produced (the build engine's export), so it is not downloaded again. The
   * file's sha256 must be `digest` (checked before extraction); the file is left where it is.
   */
  async adopt(digest: string, tarFile: string): Promise<string> {
    if (!isSha256Hex(digest)) throw new LayerCorrupt(String(digest), 'not a sha256 digest');
    await this.init();
    const hit = this.touch(digest);
    if (hit) return hit;
    const running = this.inflight.get(digest);
    if (running) return running;
    const p = this.evicting
      .then(async () => {
        const hash = createHash('sha256');
        await pipeline(createReadStream(tarFile), hash);
        const actual = hash.digest('hex');
        if (actual !== digest) throw new LayerCorrupt(digest, `content hashes to ${actual}`);
        return this.extract(digest, tarFile);
      })
      .finally(() => this.settled(digest));
    this.inflight.set(digest, p);
    return p;
  }

  /** A fresh name in the cache dir that load() removes if a crash leaves it behind. */
  private tempName(kind: string): string {
    return join(this.opts.dir, `.tmp-${kind}-${randomBytes(6).toString('hex')}`);
  }

  private touch(digest: string): string | undefined {
    const e = this.entries.get(digest);
    if (!e) return undefined;
    e.lastUsed = Date.now() + ++this.clock / 1e6;
    return e.dir;
  }

  /** Extracts a verified layer tar (its digest already checked) and records it. */
  private async extract(digest: string, tarFile: string): Promise<string> {
    const final = this.dirOf(digest);
    const tmp = join(this.opts.dir, `.tmp-${digest.slice(0, 16)}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp, { mode: 0o755 });
    const started = Date.now();
    try {
      const size = (await stat(tarFile)).size;
      // As root: owners (already shifted), whiteout devices and opaque dirs come out as stored.
      await extractLayer(tarFile, tmp).catch((err: unknown) => {
        throw new LayerCorrupt(digest, (err as Error).message);
      });
      await chmod(tmp, 0o755);
      await writeFile(`${final}.json`, JSON.stringify({ digest, size }));
      try {
        await rename(tmp, final);
      } catch (err) {
        // A directory of this name exists: from a crashed run (no entry) it is replaced.
        if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
        const existing = [...this.entries.values()].find((e) => e.dir === final);
        if (existing) throw new LayerCorrupt(digest, `its cache name collides with layer ${existing.digest}`);
        await rm(final, { recursive: true, force: true });
        await rename(tmp, final);
      }
      this.entries.set(digest, { digest, dir: final, size, lastUsed: Date.now() + ++this.clock / 1e6 });
      this.opts.log.debug({ digest, size, ms: Date.now() - started }, 'layer extracted');
      return final;
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * A fetch or adoption ended: the layer may be evicted from now on, so the eviction runs after it is no longer in
   * flight (one run from inside the extraction would skip it as in flight and leave the cache over its bound).
   */
  private settled(digest: string): void {
    this.inflight.delete(digest);
    this.scheduleEviction();
  }

  private scheduleEviction(): void {
    this.evicting = this.evicting
      .then(() => this.evict())
      .catch((err: unknown) => this.opts.log.warn({ err }, 'layer cache eviction failed'));
  }

  /** Waits for pending evictions (tests, shutdown). */
  settle(): Promise<void> {
    return this.evicting;
  }

  private async evict(): Promise<void> {
    if (this.bytes() <= this.opts.maxBytes) return;
    const inUse = new Set(await this.opts.inUse?.() ?? []);
    const candidates = [...this.entries.values()].sort((a, b) => a.lastUsed - b.lastUsed);
    for (const e of candidates) {
      if (this.bytes() <= this.opts.maxBytes) break;
      // Checked again right before removal: a lease taken while inUse was read wins.
      if (this.pins.has(e.digest) || inUse.has(e.dir) || this.inflight.has(e.digest)) continue;
      this.entries.delete(e.digest);
      await rm(`${e.dir}.json`, { force: true });
      await rm(e.dir, { recursive: true, force: true });
      this.opts.log.info({ digest: e.digest, size: e.size }, 'evicted layer');
    }
    if (this.bytes() > this.opts.maxBytes) {
      this.opts.log.warn({ bytes: this.bytes(), maxBytes: this.opts.maxBytes }, 'layer cache over its size: the rest is in use');
    }
  }
}
