// envd as every slot bind-mounts it: an immutable, content-addressed copy of the envd bundle under
// `<dataDir>/envd/<sha256-prefix>/`, never the build directory. A bind mount pins the directory it was
// made from: rebuilding the bundle in place (a second `cove up`) would leave every running and warm sandbox
// with a deleted directory (lazily loaded native addons fail, CRIU cannot restore it). A copy that is never
// modified while it exists sidesteps that; a changed bundle gets a new directory, so running sandboxes keep
// theirs and new slots get the new one. Copies no slot references are removed by pruneEnvdInstalls.

import { createHash } from 'node:crypto';
import { chmod, copyFile, lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** Marks a finished copy: a directory without it is a crashed install and is made again. */
const COMPLETE = '.cove-envd-complete';

async function filesOf(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(e.parentPath ?? (e as unknown as { path: string }).path, e.name);
    if (e.isFile()) out.push(relative(dir, path));
    else if (!e.isDirectory()) throw new Error(`envd bundle entry ${relative(dir, path)} is neither a file nor a directory`);
  }
  return out.sort();
}

/** sha256 over every file's relative path, executable bit and bytes. */
async function bundleDigest(dir: string, files: string[]): Promise<string> {
  const h = createHash('sha256');
  for (const f of files) {
    const st = await stat(join(dir, f));
    h.update(`${f}\0${st.mode & 0o111 ? 'x' : '-'}\0${st.size}\0`);
    h.update(await readFile(join(dir, f)));
  }
  return h.digest('hex');
}

export function envdInstallRoot(dataDir: string): string {
  return join(dataDir, 'envd');
}

/** Installs `bundleDir` (once per content) and returns the directory slots bind-mount. */
export async function installEnvd(bundleDir: string, dataDir: string): Promise<string> {
  const files = await filesOf(bundleDir);
  const root = envdInstallRoot(dataDir);
  const dest = join(root, (await bundleDigest(bundleDir, files)).slice(0, 32));
  if (await lstat(join(dest, COMPLETE)).then(() => true, () => false)) return dest;
  await mkdir(root, { recursive: true, mode: 0o711 });
  const tmp = `${dest}.${process.pid}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  for (const f of files) {
    const to = join(tmp, f);
    await mkdir(join(to, '..'), { recursive: true, mode: 0o755 });
    await copyFile(join(bundleDir, f), to);
    // Read-only for everyone (root inside the sandbox is not host root): it can be read, never changed.
    await chmod(to, (await stat(join(bundleDir, f))).mode & 0o111 ? 0o555 : 0o444);
  }
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

/** Removes installs other than `keep` (the current one and every one a slot still mounts). */
export async function pruneEnvdInstalls(dataDir: string, keep: ReadonlySet<string>): Promise<string[]> {
  const root = envdInstallRoot(dataDir);
  const removed: string[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const dir = join(root, name);
    if (keep.has(dir)) continue;
    await rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}
