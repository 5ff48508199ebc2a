// OCI layer tar → overlayfs upper directory (Cove's layer format, docs/template-builds.md):
//   `.wh.<name>`      → 0/0 character device <name> (overlay whiteout)
//   `.wh..wh..opq`    → trusted.overlay.opaque=y on the directory
//   owners            → shifted by idOffset into the sandbox user namespace
// The tar is untrusted. Every entry is resolved lexically inside destDir (no `..`, leading `/` dropped), every
// parent on the way must be a real directory (never a symlink, so nothing is written through a link, whatever it
// points at), existing entries are replaced rather than written through, and hard links may only point at files
// this layer already holds. A refused entry aborts the import with UnsafeLayer; destDir is then half-written
// and the caller throws it away.

import { execFileSync } from 'node:child_process';
import { constants, chmodSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, rmSync, symlinkSync, utimesSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { setAttributeSync } from 'fs-xattr';
import { extract as tarExtract, type Header } from 'tar-stream';
import { UnsafeLayer } from './errors.js';

export interface ImportLayerOptions {
  /** Added to every uid/gid (100000: root of Cove's sandbox user namespace). */
  idOffset: number;
  /** Highest uid/gid an image may use (the size of the namespace's id map minus one). */
  maxId?: number;
  /**
   * Paths (relative, no leading `/`) never written: by default the files the runtime writes into every sandbox,
   * which a layer never carries.
   */
  exclude?: ReadonlySet<string>;
}

export interface ImportLayerResult {
  entries: number;
  whiteouts: number;
  opaqueDirs: number;
  /** Device nodes are not imported: the runtime provides /dev. */
  skippedDevices: number;
}

export const RUNTIME_FILES: ReadonlySet<string> = new Set(['etc/hostname', 'etc/hosts', 'etc/resolv.conf']);

const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Lexical path inside the layer root: `''` is the root itself. Throws on `..` and NUL. */
function normalize(name: string, entry: string): string {
  if (name.includes('\0')) throw new UnsafeLayer(entry, 'NUL in path');
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw new UnsafeLayer(entry, 'path contains ..');
    parts.push(p);
  }
  return parts.join('/');
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Opens a gzip or plain tar (told apart by the gzip magic bytes). */
async function openTar(input: Readable): Promise<Readable> {
  const it = input[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let n = 0;
  while (n < 2) {
    const r = await it.next();
    if (r.done) break;
    head.push(r.value as Buffer);
    n += (r.value as Buffer).length;
  }
  const first = Buffer.concat(head);
  async function* all(): AsyncGenerator<Buffer> {
    if (first.length) yield first;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value as Buffer;
    }
  }
  const raw = Readable.from(all(), { objectMode: false });
  if (first[0] !== 0x1f || first[1] !== 0x8b) return raw;
  const gunzip = createGunzip();
  raw.on('error', (e) => gunzip.destroy(e));
  return raw.pipe(gunzip);
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) {
    /* discard */
  }
}

export async function importLayer(input: Readable, destDir: string, options: ImportLayerOptions): Promise<ImportLayerResult> {
  const offset = options.idOffset;
  const maxId = options.maxId ?? 65535;
  const exclude = options.exclude ?? RUNTIME_FILES;
  const result: ImportLayerResult = { entries: 0, whiteouts: 0, opaqueDirs: 0, skippedDevices: 0 };
  mkdirSync(destDir, { recursive: true });
  const rootSt = lstatSync(destDir);
  if (!rootSt.isDirectory()) throw new Error(`${destDir} is not a directory`);

  // Directories known to be real directories inside destDir (a symlink never gets in here).
  const dirs = new Set<string>(['']);
  // Directory times are set last: writing their children changes them.
  const dirTimes = new Map<string, Date>();

  const abs = (rel: string) => (rel === '' ? destDir : join(destDir, rel));
  const owner = (id: number | undefined, entry: string): number => {
    const v = id ?? 0;
    if (!Number.isInteger(v) || v < 0 || v > maxId) throw new UnsafeLayer(entry, `owner id ${v} is outside 0..${maxId}`);
    return v + offset;
  };

  /** Makes sure every parent of `rel` is a real directory, creating missing ones (root-owned, 0755). */
  const parents = (rel: string, entry: string, create = true): void => {
    const parts = rel.split('/');
    let cur = '';
    for (let i = 0; i < parts.length - 1; i++) {
      cur = cur ? `${cur}/${parts[i]}` : parts[i];
      if (dirs.has(cur)) continue;
      const st = lstatOrNull(abs(cur));
      if (st === null) {
        if (!create) throw new UnsafeLayer(entry, `${cur} does not exist`);
        mkdirSync(abs(cur), { mode: 0o755 });
        lchownSync(abs(cur), offset, offset);
      } else if (!st.isDirectory()) {
        throw new UnsafeLayer(entry, `parent ${cur} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}`);
      }
      dirs.add(cur);
    }
  };

  /** Removes whatever is at `rel` (a later entry replaces an earlier one, as in `tar -x`). */
  const clear = (rel: string, keepDir: boolean): Stats | null => {
    const st = lstatOrNull(abs(rel));
    if (st === null) return null;
    if (keepDir && st.isDirectory()) return st;
    rmSync(abs(rel), { recursive: true, force: true });
    for (const d of dirs) if (d === rel || d.startsWith(`${rel}/`)) dirs.delete(d);
    return null;
  };

  const setMeta = (rel: string, h: Header, entry: string): void => {
    const p = abs(rel);
    lchownSync(p, owner(h.uid, entry), owner(h.gid, entry));
    // After chown, which clears setuid/setgid.
    chmodSync(p, (h.mode) & 0o7777);
  };

  const source = await openTar(input);
  const extract = tarExtract();
  // The input's own failure (a digest mismatch, a gzip error) is the one to report, not the "stream destroyed"
  // that the entry being read sees as a consequence.
  let sourceError: Error | undefined;
  source.on('error', (e) => {
    sourceError = e;
    extract.destroy(e);
  });
  source.pipe(extract);
  try {
    for await (const e of extract) {
      const h = e.header;
      const entry = h.name;
      result.entries++;
      let rel = normalize(h.name, entry);
      const base = rel.slice(rel.lastIndexOf('/') + 1);
      const dir = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';

      if (exclude.has(rel)) {
        await drain(e);
        continue;
      }

      if (base.startsWith('.wh.')) {
        await drain(e);
        parents(rel, entry);
        if (base === '.wh..wh..opq') {
          // parents() has just made sure `dir` is a real directory (it is a parent of the marker).
          setAttributeSync(abs(dir), 'trusted.overlay.opaque', Buffer.from('y'));
          result.opaqueDirs++;
          continue;
        }
        if (base.startsWith('.wh..wh.')) continue; // AUFS bookkeeping (.wh..wh.plnk and friends)
        const name = base.slice('.wh.'.length);
        if (name === '' || name === '.' || name === '..') throw new UnsafeLayer(entry, 'whiteout of an invalid name');
        rel = dir ? `${dir}/${name}` : name;
        clear(rel, false);
        execFileSync('mknod', ['-m', '0000', abs(rel), 'c', '0', '0']);
        result.whiteouts++;
        continue;
      }

      if (rel === '') {
        // `./`: the layer root's own owner and mode.
        await drain(e);
        if (h.type === 'directory') {
          setMeta('', h, entry);
          if (h.mtime) dirTimes.set('', h.mtime);
        }
        continue;
      }
      parents(rel, entry);

      switch (h.type) {
        case 'directory': {
          await drain(e);
          const kept = clear(rel, true);
          if (!kept) mkdirSync(abs(rel));
          dirs.add(rel);
          setMeta(rel, h, entry);
          if (h.mtime) dirTimes.set(rel, h.mtime);
          break;
        }
        case 'file':
        case 'contiguous-file': {
          clear(rel, false);
          const fh = await open(abs(rel), WRITE_FLAGS, 0o600);
          try {
            for await (const chunk of e) await fh.write(chunk as Buffer);
          } finally {
            await fh.close();
          }
          setMeta(rel, h, entry);
          if (h.mtime) utimesSync(abs(rel), h.mtime, h.mtime);
          break;
        }
        case 'symlink': {
          await drain(e);
          const target = h.linkname ?? '';
          if (target === '' || target.includes('\0')) throw new UnsafeLayer(entry, 'empty or invalid symlink target');
          clear(rel, false);
          // Any target is fine: a symlink is only data here, and nothing below is ever written through one.
          symlinkSync(target, abs(rel));
          lchownSync(abs(rel), owner(h.uid, entry), owner(h.gid, entry));
          if (h.mtime) lutimesSync(abs(rel), h.mtime, h.mtime);
          break;
        }
        case 'link': {
          await drain(e);
          const target = normalize(h.linkname ?? '', entry);
          if (target === '') throw new UnsafeLayer(entry, 'hard link to the layer root');
          parents(target, entry, false);
          const st = lstatOrNull(abs(target));
          if (!st) throw new UnsafeLayer(entry, `hard link target ${target} is not in this layer`);
          if (st.isDirectory()) throw new UnsafeLayer(entry, 'hard link to a directory');
          if (target === rel) break;
          clear(rel, false);
          // link(2) does not follow a symlink target: at worst this links the symlink itself.
          linkSync(abs(target), abs(rel));
          break;
        }
        case 'fifo': {
          await drain(e);
          clear(rel, false);
          execFileSync('mkfifo', ['-m', '0600', abs(rel)]);
          setMeta(rel, h, entry);
          break;
        }
        case 'character-device':
        case 'block-device':
          await drain(e);
          result.skippedDevices++;
          break;
        default:
          await drain(e);
          break;
      }
    }
    // The tar may end (zero blocks) before its input does: the rest (padding) still has to be read, since a
    // digest is only checked at the very end of the input.
    source.unpipe(extract);
    source.resume();
    await finished(source);
  } catch (err) {
    source.destroy();
    throw sourceError ?? err;
  }
  if (sourceError) throw sourceError;
  for (const [rel, t] of dirTimes) {
    if (dirs.has(rel)) utimesSync(abs(rel), t, t);
  }
  return result;
}
