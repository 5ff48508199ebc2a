import type { Stats } from 'node:fs';
import type { SandboxUser } from './user-db.js';

/**
 * POSIX permission check for `user` against a stat, since envd itself runs as root and
 * opens files on the user's behalf (root passes everything, as it would in the kernel).
 */
export function userCan(st: Stats, user: SandboxUser, want: 'r' | 'w' | 'x'): boolean {
  if (user.uid === 0) return true;
  const bit = want === 'r' ? 4 : want === 'w' ? 2 : 1;
  if (st.uid === user.uid) return ((st.mode >> 6) & bit) !== 0;
  if (user.groups.includes(st.gid)) return ((st.mode >> 3) & bit) !== 0;
  return (st.mode & bit) !== 0;
}
