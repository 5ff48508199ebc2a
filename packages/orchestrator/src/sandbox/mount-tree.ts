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

/**
 * One read of the mount table. The kernel writes /proc/self/mountinfo anew on every read, and it grows with the
 * node's slots (a few mounts each): a slot's teardown reads it twice this way, where a read per question made it
 * ~10 reads, each O(every slot's mounts).
 */
export class MountTable {
  private constructor(private readonly entries: { point: string; source: string | undefined }[]) {}

  static async read(): Promise<MountTable> {
    return new MountTable(
      (await mountInfo()).map((f) => {
        // Optional fields end at "-"; then the filesystem type and the source.
        const dash = f.indexOf('-', 6);
        return { point: unescape(f[4] ?? ''), source: dash > 0 && f[dash + 2] ? unescape(f[dash + 2]!) : undefined };
      }).filter((e) => e.point !== ''),
    );
  }

  /** The source of what is mounted at `path` (the last mount's where points are stacked). */
  sourceOf(path: string): string | undefined {
    const p = resolve(path);
    let source: string | undefined;
    for (const e of this.entries) if (e.point === p && e.source !== undefined) source = e.source;
    return source;
  }

  /** Every mount point strictly under a directory, deepest first. */
  under(dir: string): string[] {
    const base = resolve(dir);
    return this.entries.map((e) => e.point).filter((m) => m.startsWith(`${base}/`)).sort((a, b) => b.length - a.length);
  }

  /** How many mounts are stacked at `path`. */
  count(path: string): number {
    const p = resolve(path);
    return this.entries.filter((e) => e.point === p).length;
  }
}

/** Every mount point strictly under a directory, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  return (await MountTable.read()).under(dir);
}

export async function mountedAt(path: string): Promise<boolean> {
  return (await MountTable.read()).count(path) > 0;
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

/**
 * Each of `paths` (in the order given: deepest first) unmounted as often as `table` shows it stacked, then one more
 * read of the table checks: a point still mounted (an umount that failed, a mount made meanwhile) goes the way of
 * unmountAll, which reads the table after every umount and throws when even a detach fails.
 */
export async function unmountEach(paths: string[], table: MountTable): Promise<void> {
  const done = new Set<string>();
  for (const p of paths) {
    if (done.has(resolve(p))) continue;
    done.add(resolve(p));
    for (let n = table.count(p); n > 0; n--) {
      const r = await run(HOST_OP.umount, [p], { allowFailure: true });
      if (r.code !== 0) await run(HOST_OP.umount, [p, 'detach'], { allowFailure: true });
    }
  }
  const after = await MountTable.read();
  for (const p of paths) if (after.count(p) > 0) await unmountAll(p);
}

/** Everything mounted at or under a directory is unmounted, deepest first. */
export async function unmountTree(dir: string): Promise<void> {
  const table = await MountTable.read();
  await unmountEach([...table.under(dir), dir], table);
}

/**
 * Deletes a tree only once nothing is mounted in it; throws (and deletes nothing) when a mount could not be taken
 * out. rm never follows symlinks, so a link inside leads nowhere.
 */
export async function removeTree(dir: string): Promise<void> {
  await unmountTree(dir);
  const after = await MountTable.read();
  const left = after.under(dir);
  if (left.length || after.count(dir) > 0) throw new Error(`still mounted under ${dir}: ${left.join(', ') || dir}`);
  await rm(dir, { recursive: true, force: true });
}
