#!/usr/bin/env node
// Host cleanup of one node for `cove down`, run after the node's orchestrator stopped or died: destroys every
// slot of the runtime instance (processes, slot disk and overlay mounts, loop devices, netns, veths, cgroups)
// and removes the instance's nft tables, bridge and cgroup parents. Data that must survive (templates, paused
// sandboxes' snapshots, records) stays. Reads only the names of the node's host objects, not its secrets, so a
// deployment whose state dir is gone can still be cleaned. Idempotent: a clean host is left as it is.

import { existsSync, rmSync } from 'node:fs';
import { z } from 'zod';
import { createLogger } from './logger.js';
import { LinuxSandboxRuntime } from './sandbox/linux-runtime.js';

const env = z
  .object({
    COVE_DATA_DIR: z.string().min(1).default('/var/lib/cove'),
    COVE_TEMPLATE_CACHE_DIR: z.string().min(1).optional(),
    COVE_SANDBOX_SUBNET: z.string().optional(),
    COVE_SANDBOX_BRIDGE: z.string().optional(),
    // The same patterns the orchestrator's config accepts: these names go to ip, nft and /sys/fs/cgroup.
    COVE_RUNTIME_INSTANCE: z.string().regex(/^[a-z][a-z0-9]{0,9}$/).optional(),
    COVE_VETH_PREFIX: z.string().regex(/^[a-z][a-z0-9-]{0,3}$/).optional(),
  })
  .safeParse(process.env);
if (!env.success) {
  process.stderr.write(`teardown: ${env.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}\n`);
  process.exit(2);
}
const c = env.data;
const log = createLogger('warn');
const runtime = new LinuxSandboxRuntime({
  dataDir: c.COVE_DATA_DIR,
  // Teardown never boots a slot: the envd bundle and node binary are not read.
  envdDir: '/nonexistent',
  nodeBinary: process.execPath,
  logger: log,
  ...(c.COVE_TEMPLATE_CACHE_DIR ? { templatesDir: c.COVE_TEMPLATE_CACHE_DIR } : {}),
  ...(c.COVE_SANDBOX_SUBNET ? { subnet: c.COVE_SANDBOX_SUBNET } : {}),
  ...(c.COVE_SANDBOX_BRIDGE ? { bridge: c.COVE_SANDBOX_BRIDGE } : {}),
  ...(c.COVE_RUNTIME_INSTANCE ? { instance: c.COVE_RUNTIME_INSTANCE } : {}),
  ...(c.COVE_VETH_PREFIX ? { vethPrefix: c.COVE_VETH_PREFIX } : {}),
});
// The runtime makes its data dir; one that did not exist held nothing to keep (a second `down` after a purge).
const existed = existsSync(c.COVE_DATA_DIR);
runtime.teardownHost().then(
  (cleaned) => {
    if (!existed) rmSync(c.COVE_DATA_DIR, { recursive: true, force: true });
    process.stdout.write(JSON.stringify({ destroyedSlots: cleaned }) + '\n');
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`teardown failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
