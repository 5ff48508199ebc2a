// Stop-gap for a runtime gap (reported; remove once src/sandbox does it itself): destroying a slot leaves
// the host's ARP entry for its address on the node bridge. The next slot that gets the same address has a
// new MAC, and while any other port keeps the bridge up the stale entry stays REACHABLE for up to ~30 s,
// so the new slot's envd is unreachable and its boot times out. Measured: boot A, claim, boot C, destroy A,
// boot B on A's address → "no answer on /health within 30000 ms"; with the flush below B boots in ~0.5 s.
// Sandbox addresses are unique to the sandbox subnet, so flushing by address alone touches nothing else.

import { execFile } from 'node:child_process';
import { isIPv4 } from 'node:net';

export function flushNeighbor(address: string): Promise<void> {
  if (!isIPv4(address)) return Promise.resolve();
  return new Promise((resolve) => {
    execFile('ip', ['neigh', 'flush', 'to', address], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } }, () => resolve());
  });
}
