// Whether two processes share a network namespace, so one can reach the addresses the other routes: the kernel's
// boot id (a namespace inode is only unique within one boot of one machine) and the inode of the process's
// network namespace. Nodes report theirs (InfoResponse.network_namespace); an edge with the same value sends a
// public sandbox's traffic straight to the sandbox's address instead of through the node proxy.

import { readFileSync, statSync } from 'node:fs';

/** `<boot id>:<netns inode>` of this process, or '' when either cannot be read (never equal to anything). Read once at start. */
export function networkNamespaceId(): string {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const ns = statSync('/proc/self/ns/net');
    return /^[0-9a-f-]{36}$/.test(boot) ? `${boot}:${ns.ino}` : '';
  } catch {
    return '';
  }
}
