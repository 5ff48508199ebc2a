// Templates are stored with ownership shifted into the sandboxes' user-namespace range, so root inside
// (host uid 100000) owns the rootfs and setuid binaries such as sudo work. chown clears setuid/setgid
// bits (and file capabilities), so modes are re-applied after each lchown.

import { chmod, lchown, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export async function shiftOwnership(root: string, offset: number): Promise<number> {
  let count = 0;
  const visit = async (path: string): Promise<void> => {
    const st = await lstat(path);
    await lchown(path, st.uid + offset, st.gid + offset);
    count++;
    if (!st.isSymbolicLink() && (st.mode & 0o7000) !== 0) await chmod(path, st.mode & 0o7777);
    if (st.isDirectory()) {
      for (const name of await readdir(path)) await visit(join(path, name));
    }
  };
  await visit(root);
  return count;
}
