// Binaries the host lends every sandbox (node for envd, tini as PID 1), as execute-only copies owned by
// host root in `<dataDir>/bin`. Why copies: host uid 0 is not mapped in the sandbox's user namespace,
// so root inside has no DAC override on them and cannot read a 0711 file; exec of an unreadable
// binary makes the kernel mark the process non-dumpable. tini and envd thus run non-dumpable: root
// inside (reachable via sudo) can neither read their /proc/<pid>/environ (the init token) nor ptrace
// or read their memory, for lack of CAP_SYS_PTRACE. The host's own files keep their modes.

import { chmod, copyFile, mkdir, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';

export async function ensureExecOnlyCopy(source: string, binDir: string, name: string): Promise<string> {
  const dest = join(binDir, name);
  const [src, cur] = await Promise.all([stat(source), stat(dest).catch(() => null)]);
  if (cur && cur.size === src.size && cur.mtimeMs >= src.mtimeMs && (cur.mode & 0o777) === 0o711) return dest;
  await mkdir(binDir, { recursive: true, mode: 0o711 });
  const tmp = `${dest}.${process.pid}.tmp`;
  await copyFile(source, tmp);
  await chmod(tmp, 0o711);
  await rename(tmp, dest);
  return dest;
}
