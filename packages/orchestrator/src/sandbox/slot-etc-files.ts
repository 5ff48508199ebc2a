// /etc/hostname, /etc/hosts and /etc/resolv.conf of a slot, written into its overlay (owned by root
// inside, so the sandbox may edit them) rather than bind-mounted from the host: fewer mounts, nothing
// CRIU would have to treat as external, and the claim can rewrite them in place.

import { chown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export async function writeSlotEtcFiles(rootfs: string, hostname: string, nameservers: string[], rootId: number): Promise<void> {
  const files: Record<string, string> = {
    hostname: `${hostname}\n`,
    hosts: `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${hostname}\n`,
    // No resolver is better than a wrong one; sandboxes without internet cannot reach DNS anyway.
    'resolv.conf': nameservers.map((d) => `nameserver ${d}\n`).join('') || 'nameserver 127.0.0.1\n',
  };
  // A stack from an image without /etc gets one (owned by root inside), so the files below have a home.
  const etc = join(rootfs, 'etc');
  if ((await mkdir(etc, { mode: 0o755 }).then(() => true, (e: NodeJS.ErrnoException) => { if (e.code === 'EEXIST') return false; throw e; }))) {
    await chown(etc, rootId, rootId);
  }
  for (const [name, content] of Object.entries(files)) {
    const path = join(rootfs, 'etc', name);
    await writeFile(path, content, { mode: 0o644 });
    await chown(path, rootId, rootId);
  }
}
