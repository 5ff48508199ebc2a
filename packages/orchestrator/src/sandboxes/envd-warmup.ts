// Warm-up of a freshly booted envd before it waits in the pool. Measured: the first command a claimed
// sandbox ran took 55-120 ms (once 1.5 s) against 15-20 ms for the second, because everything on that
// path (Connect streaming, process spawning, a login shell reading its profile) ran cold in a new node
// process. Running one throwaway command here moves that cost off the Create path.
//
// The command is sent as the SDK sends `commands.run` (JSON, a keepalive interval, a deadline) and runs as the
// template's user, as a claimed sandbox's commands do: a warm-up in Connect's binary format, as root, left the JSON
// codec and the user's launch to the claim's first command, ~2 ms more of envd's CPU (docs/performance.md, "The
// warm-up on the SDK's path"). Before /init envd has no access token and no default user yet, so the user is named;
// only the node can reach a slot that is not claimed.

import { createClient } from '@connectrpc/connect';
import { Process } from '@cove/contracts/envd/process';
import { ENVD_KEEPALIVE_HEADER } from '@cove/contracts/sandbox';
import { asUser, envdTransport } from './envd-init.js';

/** What the SDK sends on every process stream (its `KEEPALIVE_PING_INTERVAL`, seconds). */
const SDK_KEEPALIVE_SECONDS = '50';

/** Runs `bash -l -c true` as `user` the way the SDK's `commands.run` does, and waits for it to end. */
export async function warmUpEnvd(address: string, user: string, timeoutMs = 10_000): Promise<void> {
  const client = createClient(Process, envdTransport(address, [], 'json'));
  const stream = client.start(
    { process: { cmd: '/bin/bash', args: ['-l', '-c', 'true'], envs: {} }, stdin: false },
    { timeoutMs, headers: { ...asUser(user), [ENVD_KEEPALIVE_HEADER]: SDK_KEEPALIVE_SECONDS } },
  );
  for await (const _ of stream) {
    // Drain until the process ends.
  }
}
