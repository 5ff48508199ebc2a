// Warm-up of a freshly booted envd before it waits in the pool. Measured: the first command a claimed
// sandbox ran took 55-120 ms (once 1.5 s) against 15-20 ms for the second, because everything on that
// path (Connect streaming, process spawning, a login shell reading its profile) ran cold in a new node
// process. Running one throwaway command here moves that cost off the Create path.
//
// The warm-up takes the path a claimed sandbox's first requests take, as the SDK makes them: an /init, then
// `commands.run`'s request (JSON, no user named so envd's default user runs it, a keepalive interval, a
// deadline). A warm-up in Connect's binary format without an /init left the JSON codec, the default user's launch
// and /init's own code to the claim: ~2 ms more of envd's CPU on the first command and ~1.8 ms on the claim's
// /init (docs/performance.md, "The warm-up on the SDK's path"). None of it shows in the sandbox's logs: they begin
// after the seq envd's answer to the claim's own /init names (docs/observability.md).

import { createClient } from '@connectrpc/connect';
import { Process } from '@cove/contracts/envd/process';
import { ENVD_KEEPALIVE_HEADER } from '@cove/contracts/sandbox';
import type { Logger } from 'pino';
import { envdTransport, initEnvd } from './envd-init.js';

/** The slot to warm, and the template's defaults its claim will /init it with. */
export interface WarmUpTarget {
  address: string;
  initToken: string;
  user: string;
  workdir: string;
}

/** What the SDK sends on every process stream (its `KEEPALIVE_PING_INTERVAL`, seconds). */
const SDK_KEEPALIVE_SECONDS = '50';

/**
 * /inits the slot with its template's default user and workdir, then runs `bash -l -c true` as the SDK would.
 * The /init carries no timestamp, access token or env: the claim's /init (timestamped) applies in full after it,
 * and until then only the node can reach the slot.
 */
export async function warmUpEnvd(target: WarmUpTarget, log: Logger, timeoutMs = 10_000): Promise<void> {
  const body = { defaultUser: target.user, defaultWorkdir: target.workdir };
  // One try: envd answered its health check just now, and a slot that fails here is dealt with at its claim.
  await initEnvd({ address: target.address, initToken: target.initToken, body, timeoutMs, log, retry: false });
  await warmUpCommand(target.address, timeoutMs);
}

/** `commands.run('true')`'s request, drained until the process ends; every reply read within the transport's bounds. */
export async function warmUpCommand(address: string, timeoutMs = 10_000): Promise<void> {
  const client = createClient(Process, envdTransport(address, [], 'json'));
  const stream = client.start(
    { process: { cmd: '/bin/bash', args: ['-l', '-c', 'true'], envs: {} }, stdin: false },
    { timeoutMs, headers: { [ENVD_KEEPALIVE_HEADER]: SDK_KEEPALIVE_SECONDS } },
  );
  for await (const _ of stream) {
    // Drain until the process ends.
  }
}
