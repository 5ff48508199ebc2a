// A burst of creates (issue 14): 20 `Sandbox.create` + first `commands.run("true")` at once through the unchanged
// SDK, each burst started with the warm pools full and the first burst not counted (it warms the processes).
// Beside it, in the same run, the same create → first command one at a time: the burst's figures read against
// what one create costs on the machine at that moment.
// Knobs: COVE_BENCH_BURSTS (4 counted bursts), COVE_BENCH_BURST_SIZE (20; the team's concurrency limit).

import { Sandbox } from 'e2b';
import { deployment } from '../test/deployment.js';
import { percentile, report } from './stats.js';
import { poolsSettled } from './warm-pools.js';

const BURSTS = Number(process.env.COVE_BENCH_BURSTS ?? 4);
const SIZE = Number(process.env.COVE_BENCH_BURST_SIZE ?? 20);
const SERIAL = Number(process.env.COVE_BENCH_BURST_SERIAL ?? 10);

interface One {
  create: number;
  first: number;
  sbx: Sandbox;
}

async function createAndRun(): Promise<One> {
  const t0 = performance.now();
  const sbx = await Sandbox.create({ timeoutMs: 120_000 });
  const t1 = performance.now();
  await sbx.commands.run('true');
  return { create: t1 - t0, first: performance.now() - t1, sbx };
}


deployment();
const creates: number[] = [];
const firsts: number[] = [];
const walls: number[] = [];
for (let b = 0; b <= BURSTS; b++) {
  await poolsSettled();
  const t0 = performance.now();
  const burst = await Promise.all(Array.from({ length: SIZE }, () => createAndRun()));
  const wall = performance.now() - t0;
  await Promise.all(burst.map((o) => o.sbx.kill()));
  if (b === 0) continue;
  walls.push(wall);
  for (const o of burst) {
    creates.push(o.create);
    firsts.push(o.first);
  }
}
const serial: number[] = [];
await poolsSettled();
for (let i = 0; i < SERIAL; i++) {
  const o = await createAndRun();
  serial.push(o.create + o.first);
  await o.sbx.kill();
}
report(`burst of ${SIZE}: Sandbox.create p50`, percentile(creates, 50), 'ms');
report(`burst of ${SIZE}: Sandbox.create p95`, percentile(creates, 95), 'ms');
report(`burst of ${SIZE}: first command p50`, percentile(firsts, 50), 'ms');
report(`burst of ${SIZE}: first command p95`, percentile(firsts, 95), 'ms');
report(`burst of ${SIZE}: create→first command p95`, percentile(creates.map((c, i) => c + firsts[i]!), 95), 'ms', '≤ 250');
report(`burst of ${SIZE}: wall p50`, percentile(walls, 50), 'ms');
report(`burst of ${SIZE}: creates per second`, (SIZE * 1000) / percentile(walls, 50), '1/s', '≥ 20');
report('baseline: create→first command, one at a time, p50', percentile(serial, 50), 'ms');
