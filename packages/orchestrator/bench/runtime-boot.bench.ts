// Slot boot latency (crun run → first process answers /health) and teardown latency, sequential.
// Run: node packages/orchestrator/dist/bench/runtime-boot.bench.js [count] [parallel] (as root, after a build).
// Uses the test runtime instance names so it never touches a node's own slots.

import { STAND_IN, makeRuntime } from '../test/runtime-fixture.js';

const count = Number(process.argv[2] ?? 20);
/** How many boots run at once (a warm pool refills several slots concurrently). */
const parallel = Number(process.argv[3] ?? 1);

const rt = makeRuntime({ instance: 'covebench', vethPrefix: 'cbh-', subnet: '10.234.0.0/16' });
await rt.prepare();
await rt.cleanupOrphans([]);

const boot: number[] = [];
const destroy: number[] = [];
const started = performance.now();
for (let i = 0; i < count; i += parallel) {
  const batch = Math.min(parallel, count - i);
  const slots = await Promise.all(
    Array.from({ length: batch }, async () => {
      const t = performance.now();
      const slot = await rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 256 }, process: STAND_IN });
      boot.push(performance.now() - t);
      return slot;
    }),
  );
  await Promise.all(
    slots.map(async (slot) => {
      const t = performance.now();
      await rt.destroy(slot.slotId);
      destroy.push(performance.now() - t);
    }),
  );
}
const wallMs = performance.now() - started;
await rt.teardownHost();

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! * 10) / 10;
};
const rows = [
  { what: 'boot (to /health)', p50: pct(boot, 50), p95: pct(boot, 95), max: pct(boot, 100) },
  { what: 'destroy', p50: pct(destroy, 50), p95: pct(destroy, 95), max: pct(destroy, 100) },
];
process.stdout.write(`${rows.map((r) => `${r.what.padEnd(20)} p50 ${r.p50} ms  p95 ${r.p95} ms  max ${r.max} ms`).join('\n')}\n`);
process.stdout.write(`${JSON.stringify({ count, parallel, wallMs: Math.round(wallMs), rows })}\n`);
for (const r of rows) {
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name: `runtime ${r.what} p50`, value: r.p50, unit: 'ms' })}\n`);
}
