// Mounts inside a directory tree the node is about to delete. A recursive delete crosses into whatever a mount
// shows: a bind of host /dev left by a killed mmdebstrap, a slot's overlay. So a tree is emptied of mounts first,
// and deleted only once /proc/self/mountinfo shows none left inside it.

import { readFile, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { HOST_OP, run } from './run-command.js';

/** mountinfo escapes space, tab, newline and backslash as three octal digits. */
const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));

async function mountInfo(): Promise<string[][]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').filter(Boolean).map((l) => l.split(' '));
}

async function mountPoints(): Promise<string[]> {
  return (await mountInfo()).map((f) => unescape(f[4] ?? '')).filter(Boolean);
}

/** Each mount point's source (e.g. `/dev/loop3`), the last mount's where points are stacked. */
export async function mountSources(): Promise<Map<string, string>> {
  const sources = new Map<string, string>();
  for (const f of await mountInfo()) {
    // Optional fields end at "-"; then the filesystem type and the source.
    const dash = f.indexOf('-', 6);
    if (f[4] && dash > 0 && f[dash + 2]) sources.set(unescape(f[4]), unescape(f[dash + 2]));
  }
  return sources;
}

/** Every mount point strictly under a directory, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const base = resolve(dir);
  return (await mountPoints()).filter((m) => m.startsWith(`${base}/`)).sort((a, b) => b.length - a.length);
}

export async function mountedAt(path: string): Promise<boolean> {
  const p = resolve(path);
  return (await mountPoints()).includes(p);
}

/**
 * Unmounts a mount point until nothing is mounted there (a point can be stacked); a busy one is detached lazily,
 * which takes it out of the tree at once while its users keep what they hold.
 */
export async function unmountAll(path: string): Promise<void> {
  while (await mountedAt(path)) {
    const r = await run(HOST_OP.umount, [path], { allowFailure: true });
    if (r.code !== 0) await run(HOST_OP.umount, [path, 'detach']);
  }
}

/** Everything mounted at or under a directory is unmounted, deepest first. */
export async function unmountTree(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) await unmountAll(m);
  await unmountAll(dir);
}

/**
 * Deletes a tree only once nothing is mounted in it; throws (and deletes nothing) when a mount could not be taken
 * out. rm never follows symlinks, so a link inside leads nowhere.
 */
export async function removeTree(dir: string): Promise<void> {
  await unmountTree(dir);
  const left = await mountsUnder(dir);
  if (left.length || (await mountedAt(dir))) throw new Error(`still mounted under ${dir}: ${left.join(', ') || dir}`);
  await rm(dir, { recursive: true, force: true });
}
