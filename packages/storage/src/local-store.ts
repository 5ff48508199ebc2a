// Local-directory driver, the single-machine default (DESIGN.md §3). Layout under `root`:
//   objects/<key>   published objects, one file per key
//   tmp/<random>    bodies being staged; never visible under a key
// A write goes to tmp/, is fsynced, then renamed into place and the parent directory fsynced, so a crash
// leaves either the old object or the complete new one, never a torn file. Keys are checked (keys.ts) before
// they are joined to the root.

import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { FILE_CHUNK_BYTES } from './file-chunks.js';
import { copyFile, mkdir, open, opendir, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type {
  BlobBody,
  BlobInfo,
  BlobStore,
  ByteRange,
  GetOptions,
  PutOptions,
  PutResult,
  StagedBlob,
} from './blob-store.js';
import { toReadable } from './body-stream.js';
import { BackendError, BlobNotFound, InvalidKey, InvalidRange, isStorageError } from './errors.js';
import { HashingStream, checkDeclared, verifyReceived } from './hashing-stream.js';
import { checkKey, checkPrefix } from './keys.js';

/** Options of the local-directory driver. */
export interface LocalBlobStoreOptions {
  /** Directory that holds `objects/` and `tmp/`; created if missing. */
  root: string;
  logger: Logger;
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Opens a directory and fsyncs it, making a rename or unlink inside it durable. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function rangeFits(range: ByteRange, size: number): boolean {
  return range.start >= 0 && range.start < size && (range.end === undefined || range.end >= range.start);
}

/** BlobStore on a local directory: atomic writes (temp file + fsync + rename), safe keys. */
export class LocalBlobStore implements BlobStore {
  readonly driver = 'local' as const;
  private readonly objectsDir: string;
  private readonly tmpDir: string;
  private readonly logger: Logger;

  constructor(options: LocalBlobStoreOptions) {
    this.objectsDir = join(options.root, 'objects');
    this.tmpDir = join(options.root, 'tmp');
    this.logger = options.logger.child({ storage: 'local' });
  }

  /** The file that holds `key` (exported for the node cache and for tools that need a path, e.g. loop mounts). */
  pathOf(key: string): string {
    return join(this.objectsDir, ...checkKey(key).split('/'));
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const path = this.pathOf(key);
    // Open first so a missing object is reported here, not as a stream error later.
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') throw new BlobNotFound(key);
      throw new BackendError('get', { cause: err });
    }
    const { size, isFile } = await fh.stat().then((st) => ({ size: st.size, isFile: st.isFile() }));
    const range = options.range;
    if (!isFile || (range !== undefined && !rangeFits(range, size))) {
      await fh.close();
      throw isFile ? new InvalidRange(key) : new BlobNotFound(key);
    }
    if (range === undefined) return fh.createReadStream({ highWaterMark: FILE_CHUNK_BYTES });
    return fh.createReadStream({ start: range.start, end: Math.min(range.end ?? size - 1, size - 1), highWaterMark: FILE_CHUNK_BYTES });
  }

  async stage(body: BlobBody, options: PutOptions = {}): Promise<StagedBlob> {
    checkDeclared(options);
    await mkdir(this.tmpDir, { recursive: true });
    const tmp = join(this.tmpDir, randomBytes(16).toString('hex'));
    const hasher = new HashingStream(options);
    // `flush` fsyncs the file before the stream closes, so a committed object survives a crash.
    const out = createWriteStream(tmp, { flags: 'wx', mode: 0o644, flush: true, highWaterMark: FILE_CHUNK_BYTES });
    const closed = new Promise<void>((resolve) => (out.closed ? resolve() : out.once('close', () => resolve())));
    try {
      await pipeline(toReadable(body), hasher, out);
      const sha256 = hasher.digest();
      verifyReceived(options, hasher.size, sha256);
      return this.staged(tmp, hasher.size, sha256);
    } catch (err) {
      // A failed pipeline rejects before the file stream has finished opening (it creates the file) and closing:
      // removing it earlier left the file behind under load.
      await closed;
      await rm(tmp, { force: true });
      if (isStorageError(err)) throw err;
      throw new BackendError('put', { cause: err });
    }
  }

  private staged(tmp: string, size: number, sha256: string): StagedBlob {
    let done = false;
    return {
      size,
      sha256,
      commit: async (key: string): Promise<PutResult> => {
        if (done) throw new BackendError('commit of an already committed or discarded body');
        const path = this.pathOf(key);
        try {
          await this.mkdirFor(key, path);
          await rename(tmp, path);
          await syncDir(dirname(path));
        } catch (err) {
          await rm(tmp, { force: true });
          if (isStorageError(err)) throw err;
          if (errno(err) === 'EISDIR' || errno(err) === 'ENOTDIR' || errno(err) === 'EEXIST') {
            throw new InvalidKey(key, 'collides with a directory or file of another key');
          }
          throw new BackendError('commit', { cause: err });
        } finally {
          done = true;
        }
        return { key, size, sha256 };
      },
      discard: async (): Promise<void> => {
        done = true;
        await rm(tmp, { force: true });
      },
    };
  }

  private async mkdirFor(key: string, path: string): Promise<void> {
    try {
      await mkdir(dirname(path), { recursive: true });
    } catch (err) {
      if (errno(err) === 'EEXIST' || errno(err) === 'ENOTDIR') {
        throw new InvalidKey(key, 'a prefix of it is already an object');
      }
      throw err;
    }
  }

  /**
   * Removes staging files older than `maxAgeMs` (left behind by a crash mid-write); returns how many. Run it
   * at start-up: a write in progress is younger than any sensible age, so it is safe beside live writers.
   */
  async removeStaleTemp(maxAgeMs: number): Promise<number> {
    let removed = 0;
    const cutoff = Date.now() - maxAgeMs;
    for (const name of await readdir(this.tmpDir).catch(() => [] as string[])) {
      const path = join(this.tmpDir, name);
      const st = await stat(path).catch(() => undefined);
      if (st !== undefined && st.mtimeMs < cutoff) {
        await rm(path, { recursive: true, force: true });
        removed++;
      }
    }
    if (removed > 0) this.logger.info({ removed }, 'removed stale staging files');
    return removed;
  }

  async put(key: string, body: BlobBody, options: PutOptions = {}): Promise<PutResult> {
    checkKey(key);
    const staged = await this.stage(body, options);
    return staged.commit(key);
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    try {
      const st = await stat(this.pathOf(key));
      if (!st.isFile()) return undefined;
      return { key, size: st.size, lastModified: st.mtime };
    } catch (err) {
      if (isStorageError(err)) throw err;
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return undefined;
      throw new BackendError('head', { cause: err });
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.head(key)) !== undefined;
  }

  async delete(key: string): Promise<void> {
    const path = this.pathOf(key);
    try {
      await unlink(path);
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return;
      if (errno(err) === 'EISDIR') return;
      throw new BackendError('delete', { cause: err });
    }
    this.logger.debug({ key }, 'deleted');
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    checkPrefix(prefix);
    // Walk only the deepest directory the prefix names completely; its last segment may be partial.
    const slash = prefix.lastIndexOf('/');
    const dirKey = slash < 0 ? '' : prefix.slice(0, slash);
    const start = dirKey === '' ? this.objectsDir : join(this.objectsDir, ...dirKey.split('/'));
    const found: BlobInfo[] = [];
    await this.walk(start, dirKey, prefix, found);
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* found;
  }

  private async walk(dir: string, dirKey: string, prefix: string, out: BlobInfo[]): Promise<void> {
    let handle;
    try {
      handle = await opendir(dir);
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return;
      throw new BackendError('list', { cause: err });
    }
    for await (const entry of handle) {
      const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
      if (entry.isDirectory()) {
        if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) {
          await this.walk(join(dir, entry.name), key, prefix, out);
        }
      } else if (entry.isFile() && key.startsWith(prefix)) {
        try {
          const st = await stat(join(dir, entry.name));
          out.push({ key, size: st.size, lastModified: st.mtime });
        } catch (err) {
          if (errno(err) !== 'ENOENT') throw new BackendError('list', { cause: err });
        }
      }
    }
  }

  async copy(from: string, to: string): Promise<void> {
    const src = this.pathOf(from);
    const dst = this.pathOf(to);
    await mkdir(this.tmpDir, { recursive: true });
    const tmp = join(this.tmpDir, randomBytes(16).toString('hex'));
    try {
      await copyFile(src, tmp);
      const fh = await open(tmp, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await this.mkdirFor(to, dst);
      await rename(tmp, dst);
      await syncDir(dirname(dst));
    } catch (err) {
      await rm(tmp, { force: true });
      if (isStorageError(err)) throw err;
      if (errno(err) === 'ENOENT' || errno(err) === 'EISDIR' || errno(err) === 'ENOTDIR') {
        if ((await this.head(from)) === undefined) throw new BlobNotFound(from);
      }
      throw new BackendError('copy', { cause: err });
    }
  }
}
