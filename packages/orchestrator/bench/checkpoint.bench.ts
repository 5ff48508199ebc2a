// Checkpoint (CRIU dump) and restore (until envd answers) of one idle slot through the runtime, rounds alternating
// with and without CRIU's kernel-feature cache (criu.ts, kdatRunDir), so each figure has its same-run baseline.
// Run: node packages/orchestrator/dist/bench/checkpoint.bench.js [rounds] (as root, after a build).
// Uses its own test instance names so it never touches a node's own slots.

import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeRuntime } from '../test/runtime-fixture.js';

const rounds = Number(process.argv[2] ?? 10);
const dataDir = '/var/tmp/cove-runtime-test/covckb';
const rt = makeRuntime({ instance: 'covckb', vethPrefix: 'ckb-', subnet: '10.204.0.0/16' });
await rt.prepare();
await rt.cleanupOrphans([]);
const images = join(dataDir, 'checkpoints');
await mkdir(images, { recursive: true });

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;
const fig = { cached: { dump: [] as number[], restore: [] as number[] }, probing: { dump: [] as number[], restore: [] as number[] } };
const slot = await rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 512 } });
try {
  for (let i = 0; i < rounds * 2; i++) {
    const mode = i % 2 === 0 ? 'cached' : 'probing';
    process.env['COVE_CRIU_KDAT_CACHE'] = mode === 'cached' ? '1' : '0';
    const dir = join(images, String(i));
    const cp = await rt.checkpoint(slot.slotId, dir);
    const rs = await rt.restore(slot.slotId, dir);
    await rm(dir, { recursive: true, force: true });
    // The first round of each mode warms it (page cache; the cache file when there is none yet).
    if (i >= 2) (fig[mode].dump.push(cp.ms), fig[mode].restore.push(rs.ms));
  }
} finally {
  await rt.destroy(slot.slotId);
  await rm(images, { recursive: true, force: true });
  await rt.teardownHost();
}
const out = {
  rounds: rounds - 1,
  dumpMs: { cached: p50(fig.cached.dump), probing: p50(fig.probing.dump) },
  restoreMs: { cached: p50(fig.cached.restore), probing: p50(fig.probing.restore) },
  raw: fig,
};
console.log(JSON.stringify(out, null, 2));
