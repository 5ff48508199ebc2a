// /etc/hostname, /etc/hosts and /etc/resolv.conf of a slot, written into its overlay (owned by root
// inside, so the sandbox may edit them) rather than bind-mounted from the host: fewer mounts, nothing
// CRIU would have to treat as external, and the claim can rewrite them in place.
//
// The rootfs is the tenant's: a template, a layer or a running sandbox may have made /etc or any of these
// files a link to a host path. They are written through tenant-fs (no link is ever followed; a link at the
// file's own path is replaced by the file).

import { TenantFsError, writeTenantFiles } from './tenant-fs.js';

/**
 * Writes the three files; false (nothing written) when the sandbox's /etc is not a plain directory (a link,
 * a file): that only breaks the tenant's own name resolution, so the slot goes on.
 */
export async function writeSlotEtcFiles(rootfs: string, hostname: string, nameservers: string[], rootId: number): Promise<boolean> {
  // No resolver is better than a wrong one; sandboxes without internet cannot reach DNS anyway.
  const resolv = nameservers.map((d) => `nameserver ${d}\n`).join('') || 'nameserver 127.0.0.1\n';
  try {
    await writeTenantFiles(rootfs, rootId, rootId, 0o644, [
      { path: 'etc/hostname', content: `${hostname}\n` },
      { path: 'etc/hosts', content: `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${hostname}\n` },
      { path: 'etc/resolv.conf', content: resolv },
    ]);
    return true;
  } catch (err) {
    if (err instanceof TenantFsError && err.code === 'tenant_fs_not_plain') return false;
    throw err;
  }
}
