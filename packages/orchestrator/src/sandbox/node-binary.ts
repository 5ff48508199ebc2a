// The node binary sandboxes run envd with, as an execute-only copy owned by host root.
// Why a copy: host uid 0 is not mapped in the sandbox's user namespace, so root inside has no
// CAP_DAC_OVERRIDE over that file and cannot read a 0711 binary; exec of an unreadable binary makes
// the kernel mark the process non-dumpable. envd thus runs non-dumpable: root inside (reachable via
// sudo) can neither read /proc/1/environ (the init token) nor ptrace or read envd's memory, for lack
// of CAP_SYS_PTRACE. The host's own binary keeps its mode.

import { copyFile, chmod, mkdir, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';

export async function ensureExecOnlyNode(source: string, binDir: string): Promise<string> {
  const dest = join(binDir, 'node');
  const [src, cur] = await Promise.all([stat(source), stat(dest).catch(() => null)]);
  if (cur && cur.size === src.size && cur.mtimeMs >= src.mtimeMs && (cur.mode & 0o777) === 0o711) return dest;
  await mkdir(binDir, { recursive: true, mode: 0o711 });
  const tmp = `${dest}.${process.pid}.tmp`;
  await copyFile(source, tmp);
  await chmod(tmp, 0o711);
  await rename(tmp, dest);
  return dest;
}
