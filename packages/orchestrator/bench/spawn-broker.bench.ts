// Host tools started from a process the orchestrator's size: a spawn of its own (the way before) against the spawn
// broker, rounds alternating, so each figure has its same-run baseline. Per round: `TOOLS` runs of `true`, four at
// a time (a boot and a teardown overlap like that), the round's wall time and the longest stall of the event loop
// (the gap between 1 ms ticks): what a Create or a proxied request arriving then waits for.
// Run: node packages/orchestrator/dist/bench/spawn-broker.bench.js [rounds] [MiB held] (prints a table, then JSON).

import { spawn } from 'node:child_process';
import { run } from '../src/sandbox/run-command.js';

const rounds = Number(process.argv[2] ?? 5);
const heldMb = Number(process.argv[3] ?? 150);
const TOOLS = 40;
// Touched memory like the orchestrator's resident 110-175 MiB: a fork copies the page tables that map it.
const held = Array.from({ length: heldMb }, () => Buffer.alloc(1 << 20, 1));

const direct = (): Promise<unknown> => new Promise((r) => spawn('true', [], { stdio: 'ignore' }).on('close', r));
const brokered = (): Promise<unknown> => run('true', []);

async function round(tool: () => Promise<unknown>): Promise<{ wall: number; stall: number }> {
  let last = performance.now();
  let stall = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last);
    last = now;
  }, 1);
  const t0 = performance.now();
  for (let i = 0; i < TOOLS / 4; i++) await Promise.all([tool(), tool(), tool(), tool()]);
  const wall = performance.now() - t0;
  clearInterval(tick);
  return { wall, stall };
}

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;
await round(brokered); // starts the broker: steady state only
await round(direct);
const fig = { direct: { wall: [] as number[], stall: [] as number[] }, broker: { wall: [] as number[], stall: [] as number[] } };
for (let i = 0; i < rounds; i++) {
  for (const [name, tool] of [['direct', direct], ['broker', brokered]] as const) {
    const r = await round(tool);
    fig[name].wall.push(r.wall);
    fig[name].stall.push(r.stall);
  }
}
const rows = (['wall', 'stall'] as const).map((k) => ({
  figure: k === 'wall' ? `${TOOLS} tools, wall (ms)` : 'longest event-loop stall (ms)',
  direct: p50(fig.direct[k]),
  broker: p50(fig.broker[k]),
}));
console.log(`process holding ${heldMb} MiB (${held.length} buffers), ${rounds} rounds each, medians`);
console.log('| figure | own spawn (same run) | spawn broker |\n|---|---|---|');
for (const r of rows) console.log(`| ${r.figure} | ${r.direct.toFixed(1)} | ${r.broker.toFixed(1)} |`);
console.log(JSON.stringify({ heldMb, rounds, tools: TOOLS, medians: rows }));
