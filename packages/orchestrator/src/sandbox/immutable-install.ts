// What the host lends slots as a directory (the envd bundle, the code-interpreter guest dir): an immutable,
// content-addressed copy under `<root>/<sha256-prefix>/`, never the build directory itself. A bind mount pins
// the directory it was made from: rebuilding the source in place (a second `cove up`) would leave every running
// and warm sandbox with a deleted directory (lazily loaded files fail, CRIU cannot restore it). A copy that is
// never modified while it exists sidesteps that; changed content gets a new directory, so running sandboxes keep
// theirs and new slots get the new one. Copies no slot references are removed by pruneInstalls.
//
// The source is the host's own build output (never a tenant's); symlinks in it are copied as symlinks, so they
// resolve inside the sandbox that mounts the copy, and the host never follows them.

import { createHash } from 'node:crypto';
import { chmod, copyFile, lstat, mkdir, readdir, readFile, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';


interface Entry {
  path: string;
  kind: 'file' | 'link';
}

async function entriesOf(dir: string, what: string): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = relative(dir, join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
    if (e.isFile()) out.push({ path, kind: 'file' });
    else if (e.isSymbolicLink()) out.push({ path, kind: 'link' });
    else if (!e.isDirectory()) throw new Error(`${what} entry ${path} is neither a file, a symlink nor a directory`);
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** sha256 over every entry's relative path, kind, executable bit and bytes (a symlink's: its target). */
async function digestOf(dir: string, entries: Entry[]): Promise<string> {
  const h = createHash('sha256');
  for (const e of entries) {
    const abs = join(dir, e.path);
    if (e.kind === 'link') {
      h.update(`${e.path}\0l\0${await readlink(abs)}\0`);
      continue;
    }
    const st = await lstat(abs);
    h.update(`${e.path}\0${st.mode & 0o111 ? 'x' : '-'}\0${st.size}\0`);
    h.update(await readFile(abs));
  }
  return h.digest('hex');
}

export interface InstallExtra {
  /** Mixed into the content's digest: what else the install's files depend on (e.g. the binary that made one of them). */
  key?: string;
  /** Adds files to the copy before it is complete (each written read-only by the caller); a failure fails the install. */
  finish?: (dir: string) => Promise<void>;
}

/**
 * Installs `srcDir` under `root` (once per content) and returns the directory slots bind-mount. `marker` names the
 * file that marks a finished copy (a directory without it is a crashed install and is made again); it is part of
 * the layout, so it never changes for an existing root (a running slot's copy would be taken for a crashed one).
 */
export async function installImmutable(srcDir: string, root: string, what: string, marker: string, extra: InstallExtra = {}): Promise<string> {
  const COMPLETE = marker;
  const entries = await entriesOf(srcDir, what);
  const content = await digestOf(srcDir, entries);
  // Keyed installs name the content and the key together; unkeyed ones keep the names they always had.
  const name = extra.key === undefined ? content : createHash('sha256').update(`${content}\0${extra.key}`).digest('hex');
  const dest = join(root, name.slice(0, 32));
  if (await lstat(join(dest, COMPLETE)).then(() => true, () => false)) return dest;
  await mkdir(root, { recursive: true, mode: 0o711 });
  const tmp = `${dest}.${process.pid}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { mode: 0o755 });
  for (const e of entries) {
    const to = join(tmp, e.path);
    await mkdir(join(to, '..'), { recursive: true, mode: 0o755 });
    if (e.kind === 'link') {
      await symlink(await readlink(join(srcDir, e.path)), to);
      continue;
    }
    await copyFile(join(srcDir, e.path), to);
    // Read-only for everyone (root inside the sandbox is not host root): it can be read, never changed.
    await chmod(to, (await lstat(join(srcDir, e.path))).mode & 0o111 ? 0o555 : 0o444);
  }
  await extra.finish?.(tmp);
  await writeFile(join(tmp, COMPLETE), '', { mode: 0o444 });
  for (const d of (await readdir(tmp, { withFileTypes: true, recursive: true })).filter((e) => e.isDirectory())) {
    await chmod(join(d.parentPath ?? (d as unknown as { path: string }).path, d.name), 0o555);
  }
  await chmod(tmp, 0o555);
  // A crashed install of the same content is replaced; a complete one (another process won) is kept.
  if (await lstat(join(dest, COMPLETE)).then(() => true, () => false)) {
    await rm(tmp, { recursive: true, force: true });
    return dest;
  }
  await rm(dest, { recursive: true, force: true });
  await rename(tmp, dest);
  return dest;
}

/** Removes installs under `root` other than `keep` (the current one and every one a slot still mounts). */
export async function pruneInstalls(root: string, keep: ReadonlySet<string>): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const dir = join(root, name);
    if (keep.has(dir)) continue;
    await rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}
