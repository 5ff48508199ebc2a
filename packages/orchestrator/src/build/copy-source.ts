// A COPY step's tarball (`files/<teamId>/<filesHash>.tar`, uploaded by the SDK): fetched from storage into a
// plain tar on the host, checked entry by entry, and its files hash recomputed the way the SDK computes it
// (e2b dist `calculateFilesHash`): sha256 over "COPY <src> <dest>", then per path in sorted order the relative
// POSIX path, `st_mode`, `st_size` and the bytes (a symlink: its target). The host only reads the tar; it is
// unpacked inside the build sandbox.
//
// What the tar cannot tell: a directory's st_size (file-system dependent, tar records 0) and a hard link's
// bytes (tar records a link). The hash is computed assuming 4096-byte directories (ext4, most Linux) and
// refused on mismatch when it holds no directories and no hard links; otherwise a mismatch is only reported,
// since refusing would break every directory COPY made on macOS or tmpfs.

import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { posix } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import type { BlobStore } from '@cove/storage';
import { buildFileKey } from '@cove/storage';
import { extract as tarExtract } from 'tar-stream';
import { CopySourceRejected } from './build-errors.js';

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
/** What the SDK sees as a directory's size on ext4; see the module comment. */
const ASSUMED_DIR_SIZE = 4096;

export interface CopySourceCheck {
  /** The hash recomputed from the tar. */
  computedHash: string;
  /** True when the tar matched the declared hash. */
  verified: boolean;
  /** Why a mismatch was not refused (directories / hard links present). */
  unverifiable: string | null;
  entries: number;
  bytes: number;
}

/**
 * Writes the tarball (gzip or plain, told apart by the gzip magic bytes) as a plain tar to `destFile`, at most
 * `maxBytes` of it: a small gzip bomb would otherwise fill the node's disk before anything looks at it.
 */
export async function fetchCopySource(store: BlobStore, teamId: string, filesHash: string, destFile: string, maxBytes: number): Promise<void> {
  const body = await store.get(buildFileKey(teamId, filesHash));
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < 2 && !ended) {
    const r = await it.next();
    if (r.done) ended = true;
    else head = Buffer.concat([head, r.value]);
  }
  async function* all(): AsyncGenerator<Buffer> {
    if (head.length) yield head;
    while (!ended) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  const out = createWriteStream(destFile, { flags: 'wx', mode: 0o600 });
  const source = Readable.from(all());
  if (head[0] === 0x1f && head[1] === 0x8b) await pipeline(source, createGunzip(), capped(maxBytes), out);
  else await pipeline(source, capped(maxBytes), out);
}

function capped(maxBytes: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > maxBytes) done(new CopySourceRejected(`the files unpack to more than ${maxBytes} bytes, more than the template's disk`));
      else done(null, chunk);
    },
  });
}

/** Lexical normalisation of a tar path; throws on absolute paths and `..`. */
function entryPath(name: string): string {
  if (name.includes('\0')) throw new CopySourceRejected(`entry ${JSON.stringify(name)} contains NUL`);
  if (name.startsWith('/')) throw new CopySourceRejected(`entry ${JSON.stringify(name)} is an absolute path`);
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw new CopySourceRejected(`entry ${JSON.stringify(name)} contains ..`);
    parts.push(p);
  }
  if (parts.length === 0) throw new CopySourceRejected(`entry ${JSON.stringify(name)} names the root`);
  return parts.join('/');
}

/** A hard link's target (named from the archive root) must be a file of the copied tree. */
function checkHardLinkTarget(path: string, target: string): void {
  if (target === '' || target.includes('\0')) throw new CopySourceRejected(`hard link ${path} has an empty or bad target`);
  if (target.startsWith('/')) throw new CopySourceRejected(`hard link ${path} points outside the copied files (${target})`);
  const resolved = posix.normalize(target);
  if (resolved === '..' || resolved.startsWith('../')) {
    throw new CopySourceRejected(`hard link ${path} points outside the copied files (${target})`);
  }
}

/**
 * Reads the plain tar at `file`: refuses unsafe entries (CopySourceRejected), recomputes the files hash for
 * `COPY <src> <dest>` and compares it with `declared`.
 */
export async function checkCopySource(file: string, src: string, dest: string, declared: string): Promise<CopySourceCheck> {
  const hash = createHash('sha256');
  hash.update(`COPY ${src} ${dest}`);
  let previous = '';
  let entries = 0;
  let bytes = 0;
  const unverifiable: string[] = [];
  const extract = tarExtract();
  const done = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      const path = entryPath(h.name);
      if (previous !== '' && !(previous < path)) {
        // The SDK writes its sorted file list in order; any other order cannot hash the same.
        unverifiable.push('entries not in sorted order');
      }
      previous = path;
      entries++;
      const perm = (h.mode ?? 0) & 0o7777;
      switch (h.type) {
        case 'file':
        case 'contiguous-file': {
          hash.update(path);
          hash.update(String(S_IFREG | perm));
          hash.update(String(h.size ?? 0));
          for await (const chunk of entry) {
            hash.update(chunk as Buffer);
            bytes += (chunk as Buffer).length;
          }
          continue;
        }
        case 'directory':
          hash.update(path);
          hash.update(String(S_IFDIR | perm));
          hash.update(String(ASSUMED_DIR_SIZE));
          if (!unverifiable.includes('directories')) unverifiable.push('directories');
          break;
        case 'symlink': {
          // Kept as a link whatever it points at (relative, absolute, dangling), as E2B copies it: the tar is
          // unpacked inside the build sandbox, where a link can only lead to the sandbox's own files. (With
          // `resolveSymlinks` the SDK sends the targets' contents instead.)
          const target = h.linkname ?? '';
          if (target === '' || target.includes('\0')) throw new CopySourceRejected(`symlink ${path} has an empty or bad target`);
          hash.update(path);
          hash.update(String(S_IFLNK | perm));
          hash.update(String(Buffer.byteLength(target)));
          hash.update(target);
          break;
        }
        case 'link': {
          // Hard link names are relative to the archive root.
          checkHardLinkTarget(path, h.linkname ?? '');
          entryPath(h.linkname ?? '');
          if (!unverifiable.includes('hard links')) unverifiable.push('hard links');
          break;
        }
        default:
          throw new CopySourceRejected(`entry ${path} has unsupported type ${h.type}`);
      }
      for await (const _ of entry) {
        // Nothing to read for non-files; draining lets the next entry come.
      }
    }
  })();
  await Promise.all([pipeline(createReadStream(file), extract), done]);
  if (entries === 0) throw new CopySourceRejected('the files tarball is empty');
  const computedHash = hash.digest('hex');
  const verified = computedHash === declared;
  const why = unverifiable.length ? unverifiable.join(', ') : null;
  if (!verified && why === null) {
    throw new CopySourceRejected(`files hash mismatch: the tarball hashes to ${computedHash}, the step declares ${declared}`);
  }
  return { computedHash, verified, unverifiable: verified ? null : why, entries, bytes };
}

/** For tests and tools: the hash the SDK would compute over in-memory files (regular files only). */
export function sdkFilesHash(src: string, dest: string, files: { path: string; mode: number; data: Buffer }[]): string {
  const hash = createHash('sha256');
  hash.update(`COPY ${src} ${dest}`);
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    hash.update(f.path);
    hash.update(String(S_IFREG | (f.mode & 0o7777)));
    hash.update(String(f.data.length));
    hash.update(f.data);
  }
  return hash.digest('hex');
}

