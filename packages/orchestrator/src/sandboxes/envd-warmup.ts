// Warm-up of a freshly booted envd before it waits in the pool. Measured: the first command a claimed
// sandbox ran took 55-120 ms (once 1.5 s) against 15-20 ms for the second, because everything on that
// path (Connect streaming, process spawning, a login shell reading its profile) ran cold in a new node
// process. Running one throwaway command here moves that cost off the Create path.

import { createClient } from '@connectrpc/connect';
import { Process } from '@cove/contracts/envd/process';
import { envdTransport } from './envd-init.js';

/**
 * Runs `bash -l -c true` through envd's own process API and waits for it to end. Before /init envd has no
 * access token yet, and only the node can reach a slot that is not claimed.
 */
export async function warmUpEnvd(address: string, timeoutMs = 10_000): Promise<void> {
  const client = createClient(Process, envdTransport(address));
  const stream = client.start(
    { process: { cmd: '/bin/bash', args: ['-l', '-c', 'true'], envs: {} }, stdin: false },
    { timeoutMs },
  );
  for await (const _ of stream) {
    // Drain until the process ends.
  }
}
