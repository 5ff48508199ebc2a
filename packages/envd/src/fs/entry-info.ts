import { lstat, readlink, realpath } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { posix } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { EntryInfoSchema, FileType, type EntryInfo } from '@cove/contracts/envd/filesystem';
import type { UserDb } from '../users/user-db.js';
import { readMetadata } from './xattr-metadata.js';

/** Go's os.FileMode.String(), which is what E2B's envd reports as `permissions`. */
export function permissionString(st: Stats): string {
  let prefix = '';
  if (st.isDirectory()) prefix += 'd';
  if (st.isSymbolicLink()) prefix += 'L';
  if (st.isBlockDevice()) prefix += 'D';
  if (st.isFIFO()) prefix += 'p';
  if (st.isSocket()) prefix += 'S';
  if (st.mode & 0o4000) prefix += 'u';
  if (st.mode & 0o2000) prefix += 'g';
  if (st.isCharacterDevice()) prefix += 'Dc';
  if (st.mode & 0o1000) prefix += 't';
  if (prefix === '') prefix = '-';
  const rwx = 'rwxrwxrwx';
  let bits = '';
  for (let i = 0; i < 9; i++) bits += st.mode & (1 << (8 - i)) ? rwx[i] : '-';
  return prefix + bits;
}

function fileType(st: Stats): FileType {
  if (st.isSymbolicLink()) return FileType.SYMLINK;
  if (st.isDirectory()) return FileType.DIRECTORY;
  if (st.isFile()) return FileType.FILE;
  return FileType.UNSPECIFIED;
}

/** Builds the proto EntryInfo for an absolute path, from an lstat already taken or a fresh one. */
export async function entryInfo(absPath: string, users: UserDb, st?: Stats): Promise<EntryInfo> {
  const s = st ?? (await lstat(absPath));
  let symlinkTarget: string | undefined;
  if (s.isSymbolicLink()) {
    symlinkTarget = await realpath(absPath).catch(async () => {
      const t = await readlink(absPath).catch(() => undefined);
      return t === undefined ? undefined : posix.resolve(posix.dirname(absPath), t);
    });
  }
  const metadata = s.isSymbolicLink() ? {} : await readMetadata(absPath);
  return create(EntryInfoSchema, {
    name: posix.basename(absPath) || '/',
    type: fileType(s),
    path: absPath,
    size: BigInt(s.size),
    mode: s.mode & 0o777,
    permissions: permissionString(s),
    owner: await users.userName(s.uid),
    group: await users.groupName(s.gid),
    modifiedTime: timestampFromMs(Math.floor(s.mtimeMs)),
    symlinkTarget,
    metadata,
  });
}
