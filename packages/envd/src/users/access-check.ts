import type { Stats } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { EnvdError } from '../errors.js';
import type { SandboxUser } from './user-db.js';

/**
 * POSIX permission check for `user` against a stat, since envd itself runs as root and
 * acts on the user's behalf (root passes everything, as it would in the kernel).
 */
export function userCan(st: Stats, user: SandboxUser, want: 'r' | 'w' | 'x'): boolean {
  if (user.uid === 0) return true;
  const bit = want === 'r' ? 4 : want === 'w' ? 2 : 1;
  if (st.uid === user.uid) return ((st.mode >> 6) & bit) !== 0;
  if (user.groups.includes(st.gid)) return ((st.mode >> 3) & bit) !== 0;
  return (st.mode & bit) !== 0;
}

/** Nearest existing ancestor directory of `path` (itself included), symlinks resolved. */
async function existingDir(path: string): Promise<string> {
  let cur = path;
  for (;;) {
    const real = await realpath(cur).catch(() => undefined);
    if (real && (await stat(real).then((s) => s.isDirectory(), () => false))) return real;
    const parent = posix.dirname(cur);
    if (parent === cur) return '/';
    cur = parent;
  }
}

async function assertTraverse(dir: string, user: SandboxUser): Promise<void> {
  const parts = dir.split('/').filter(Boolean);
  let cur = '/';
  for (let i = 0; i <= parts.length; i++) {
    const st = await stat(cur).catch(() => undefined);
    if (st && !userCan(st, user, 'x')) throw new EnvdError('permission_denied', `user ${user.name} cannot access ${cur}`);
    if (i < parts.length) cur = posix.join(cur, parts[i]);
  }
}

/**
 * The user may create or remove entries in the directory that holds (or would hold) `path`:
 * every ancestor searchable, the nearest existing one writable.
 */
export async function assertCanModifyIn(path: string, user: SandboxUser, existing?: Stats): Promise<void> {
  if (user.uid === 0) return;
  const dir = await existingDir(posix.dirname(path));
  await assertTraverse(dir, user);
  const st = await stat(dir);
  if (!userCan(st, user, 'w')) throw new EnvdError('permission_denied', `user ${user.name} cannot write in ${dir}`);
  // Sticky directories (/tmp): only the entry's or the directory's owner may remove or rename it.
  if (existing && st.mode & 0o1000 && existing.uid !== user.uid && st.uid !== user.uid) {
    throw new EnvdError('permission_denied', `user ${user.name} cannot remove ${path} (sticky directory)`);
  }
}

/** The user may read (`r`) or write (`w`) the existing file at `path` (symlinks followed). */
export async function assertCanAccessFile(path: string, user: SandboxUser, want: 'r' | 'w'): Promise<void> {
  if (user.uid === 0) return;
  const real = await realpath(path);
  await assertTraverse(posix.dirname(real), user);
  const st = await stat(real);
  if (!userCan(st, user, want)) throw new EnvdError('permission_denied', `user ${user.name} cannot ${want === 'r' ? 'read' : 'write'} ${path}`);
}
