// envd's node flags, before and after `--optimize-for-size` (issue 14, density): what an idle envd keeps
// (private anonymous memory: what every idle sandbox pays) and what the flag costs when envd works (boot, the first
// command, command output and file transfer through the unchanged SDK, envd's own CPU time). The two flag sets
// run alternately (A B A B …) on the built bundle, so each figure has its same-run baseline beside it.
// envd runs on the host here, not in a sandbox: the figures compare flags, they are not a sandbox's full cost
// (that is `cove bench --density`).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { alternate, emitPair } from './envd-on-host.js';

/** The orchestrator's envd flags before this change; CURRENT is its ENVD_ARGS (orchestrator sandbox/first-process.ts). */
const PREVIOUS = ['--max-semi-space-size=1', '--max-old-space-size=128', '--v8-pool-size=1'];
const CURRENT = [...PREVIOUS, '--optimize-for-size'];
const ROUNDS = Number(process.env.COVE_ENVD_FLAGS_ROUNDS ?? 3);

const dir = await mkdtemp(join(tmpdir(), 'envd-flags-'));
let seen: Awaited<ReturnType<typeof alternate>>;
try {
  seen = await alternate({ flags: PREVIOUS }, { flags: CURRENT }, ROUNDS, dir, (arm) => (arm === 'a' ? 'without' : 'with   ') + ' --optimize-for-size');
} finally {
  await rm(dir, { recursive: true, force: true });
}
const emit = emitPair(seen, 'without --optimize-for-size, same run');
emit('envd idle: private anonymous memory (median of rounds)', 'anon', 'MiB');
emit('envd idle: PSS', 'pss', 'MiB');
emit('envd: boot to /health', 'bootMs', 'ms');
emit('envd: first command after boot', 'firstCommandMs', 'ms');
emit('envd: commands.run("true") p50', 'runTrueP50Ms', 'ms');
emit('envd: 10 MB of stdout, wall', 'outputMs', 'ms');
emit('envd: 10 MB of stdout, envd CPU', 'outputCpuMs', 'ms');
emit('envd: 10 MB file write + read, envd CPU', 'filesCpuMs', 'ms');
