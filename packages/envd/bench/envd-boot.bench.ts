// envd started through envd-boot (its mmap-hints preload, issue 14 density) against envd started by node directly,
// with the flags and environment slots use: an idle envd's page tables and memory, and what the preload costs when
// envd works. The two arms run alternately (A B A B …) on the built bundle, so each figure has its same-run baseline.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENVD_BOOT, ENVD_NODE_FLAGS } from '@cove/contracts/sandbox';
import { alternate, BUNDLE_DIR, emitPair } from './envd-on-host.js';

const ROUNDS = Number(process.env.COVE_ENVD_BOOT_ROUNDS ?? 3);

const dir = await mkdtemp(join(tmpdir(), 'envd-boot-'));
let seen: Awaited<ReturnType<typeof alternate>>;
try {
  seen = await alternate({ flags: ENVD_NODE_FLAGS }, { flags: ENVD_NODE_FLAGS, wrap: [join(BUNDLE_DIR, ENVD_BOOT)] }, ROUNDS, dir, (arm) =>
    arm === 'a' ? 'node directly   ' : 'through envd-boot',
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
const emit = emitPair(seen, 'node started directly, same run');
emit('envd idle through envd-boot: page tables (median of rounds)', 'pageTables', 'MiB');
emit('envd idle through envd-boot: private anonymous memory', 'anon', 'MiB');
emit('envd idle through envd-boot: PSS', 'pss', 'MiB');
emit('envd through envd-boot: page tables after work', 'workedPageTables', 'MiB');
emit('envd through envd-boot: boot to /health', 'bootMs', 'ms');
emit('envd through envd-boot: CPU to /health', 'bootCpuMs', 'ms');
emit('envd through envd-boot: first command after boot', 'firstCommandMs', 'ms');
emit('envd through envd-boot: commands.run("true") p50', 'runTrueP50Ms', 'ms');
emit('envd through envd-boot: 10 MB of stdout, envd CPU', 'outputCpuMs', 'ms');
emit('envd through envd-boot: 10 MB file write + read, envd CPU', 'filesCpuMs', 'ms');
