// Checkpoint (CRIU dump) and restore (until envd answers) of one slot through the runtime, rounds alternating
// lazy and whole restores (COVE_CRIU_LAZY=1/0, lazy-pages.ts), so each figure has its same-run baseline. The
// slot holds `mb` MiB of touched memory in a process that also answers HTTP by reading one byte of each page;
// after each restore the bench times the first command (`crun exec true`) and that memory-touching request.
// Run: node packages/orchestrator/dist/bench/checkpoint.bench.js [rounds] [mb] (as root, after a build).
// Uses its own test instance names so it never touches a node's own slots.

import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeRuntime } from '../test/runtime-fixture.js';

const rounds = Number(process.argv[2] ?? 10);
const mb = Number(process.argv[3] ?? 100);
const dataDir = '/var/tmp/cove-runtime-test/covckb';
const rt = makeRuntime({ instance: 'covckb', vethPrefix: 'ckb-', subnet: '10.204.0.0/16' });
await rt.prepare();
await rt.cleanupOrphans([]);
const images = join(dataDir, 'checkpoints');
await mkdir(images, { recursive: true });

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;
type Fig = Record<'dump' | 'restore' | 'firstCommand' | 'touchAll' | 'memoryIn', number[]>;
const empty = (): Fig => ({ dump: [], restore: [], firstCommand: [], touchAll: [], memoryIn: [] });
const fig = { lazy: empty(), whole: empty() };
/** The restore's own steps (LinuxSandboxRuntime.restore's `steps`), by mode; absent on a build without them. */
const steps = { lazy: {} as Record<string, number[]>, whole: {} as Record<string, number[]> };
const slot = await rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 1024 } });
// setsid: out of crun exec's session, which CRIU would refuse.
const holder = `const b=Buffer.alloc(${mb}<<20);for(let i=0;i<b.length;i+=4096)b[i]=(i>>12)&255;` +
  `require('http').createServer((q,s)=>{let x=0;for(let i=0;i<b.length;i+=4096)x+=b[i];s.end(String(x))}).listen(8000)`;
await rt.exec(slot.slotId, ['sh', '-c', `setsid /opt/cove/bin/node -e "${holder}" >/dev/null 2>&1 &`]);
const sum = async (): Promise<string> => {
  for (let i = 0; ; i++) {
    try {
      return await (await fetch(`http://${slot.address}:8000/`)).text();
    } catch (err) {
      if (i > 500) throw err;
      await sleep(20); // the holder is still starting (first call only)
    }
  }
};
const expected = await sum();
try {
  for (let i = 0; i < rounds * 2; i++) {
    const mode = i % 2 === 0 ? 'lazy' : 'whole';
    process.env['COVE_CRIU_LAZY'] = mode === 'lazy' ? '1' : '0';
    const dir = join(images, String(i));
    const cp = await rt.checkpoint(slot.slotId, dir);
    const rs = await rt.restore(slot.slotId, dir);
    if (rs.lazy !== (mode === 'lazy')) throw new Error(`round ${i}: asked for ${mode}, restored lazy=${rs.lazy}`);
    let t = performance.now();
    await rt.exec(slot.slotId, ['true']);
    const first = performance.now() - t;
    t = performance.now();
    const got = await sum();
    const touch = performance.now() - t;
    if (got !== expected) throw new Error(`round ${i}: memory came back wrong (${got}, expected ${expected})`);
    const outcome = await rt.lazyPagesDone(slot.slotId);
    if (outcome !== null && outcome !== 'served') throw new Error(`round ${i}: lazy-pages ended ${outcome}`);
    const memoryIn = rs.ms + (performance.now() - t);
    await rm(dir, { recursive: true, force: true });
    // The first round of each mode warms it (page cache).
    if (i >= 2) {
      const f = fig[mode];
      f.dump.push(cp.ms), f.restore.push(rs.ms), f.firstCommand.push(first), f.touchAll.push(touch), f.memoryIn.push(memoryIn);
      for (const [k, v] of Object.entries((rs as { steps?: Record<string, number> }).steps ?? {})) (steps[mode][k] ??= []).push(v);
    }
  }
} finally {
  await rt.destroy(slot.slotId);
  await rm(images, { recursive: true, force: true });
  await rt.teardownHost();
}
const r = (x: number) => Math.round(x * 10) / 10;
const rows = (Object.keys(fig.lazy) as Array<keyof Fig>).map((k) => ({ figure: `${k} p50 ms`, whole: r(p50(fig.whole[k])), lazy: r(p50(fig.lazy[k])) }));
console.table(rows);
const stepRows = [...new Set([...Object.keys(steps.whole), ...Object.keys(steps.lazy)])].map((k) => ({
  step: `${k} p50 ms`,
  whole: r(p50(steps.whole[k] ?? [])),
  lazy: r(p50(steps.lazy[k] ?? [])),
}));
if (stepRows.length) console.table(stepRows);
console.log(JSON.stringify({ rounds: rounds - 1, mb, p50: Object.fromEntries(rows.map((x) => [x.figure, { whole: x.whole, lazy: x.lazy }])), steps: Object.fromEntries(stepRows.map((x) => [x.step, { whole: x.whole, lazy: x.lazy }])), raw: fig }));
