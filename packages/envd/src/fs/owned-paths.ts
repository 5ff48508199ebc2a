import { chown, mkdir, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { EnvdError } from '../errors.js';
import type { SandboxUser } from '../users/user-db.js';

/**
 * mkdir -p where every directory this call creates is owned by `user`, so files a user
 * uploads into a new tree are theirs (E2B behaviour). Existing directories are left alone.
 */
export async function makeDirsOwned(dir: string, user: SandboxUser): Promise<boolean> {
  const missing: string[] = [];
  let cur = dir;
  for (;;) {
    const st = await stat(cur).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    if (st) {
      if (!st.isDirectory()) throw new EnvdError('invalid_argument', `path ${cur} is not a directory`);
      break;
    }
    missing.push(cur);
    const parent = posix.dirname(cur);
    if (parent === cur) break;
    cur = parent;
  }
  for (const d of missing.reverse()) {
    try {
      await mkdir(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      continue;
    }
    await chown(d, user.uid, user.gid);
  }
  return missing.length > 0;
}
