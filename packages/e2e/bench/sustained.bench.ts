// Sustained creates (issue 14's "20 creates/s for 5 minutes"): creates arrive on a fixed schedule, RATE a second
// for SECONDS, whether or not the earlier ones are done. Open loop on purpose: a deployment that falls behind shows
// it as latency, backlog and refusals, not as a politely slower arrival rate. Each arrival is `Sandbox.create` →
// `commands.run('true')` → `kill()` through the unchanged SDK, with the warm pools full when the schedule starts.
// Beside it, in the same run, the same cycle one at a time: what one create costs on the machine at that moment,
// in time and in the machine's CPU (until the pools have refilled), and from that how many cycles a second these
// cores give at that CPU, with a bare Node start's CPU beside it (docs/performance.md, "The sustained rate's
// ceiling"). An estimate: cycles under load share some work, so the open loop can come out a little above it.
// Knobs: COVE_BENCH_SUSTAIN_RATE (20 a second), COVE_BENCH_SUSTAIN_SECONDS (30; `cove bench --sustain-seconds 300`
// for the five minutes).

import { Sandbox } from 'e2b';
import { deployment } from '../test/deployment.js';
import { percentile, report, say } from './stats.js';
import { poolsSettled } from './warm-pools.js';
import { bareNodeStartCpuMs, cores, machineBusyMs, restingBusyPerMs, untilAtRest } from './machine-cpu.js';

const RATE = Number(process.env.COVE_BENCH_SUSTAIN_RATE ?? 20);
const SECONDS = Number(process.env.COVE_BENCH_SUSTAIN_SECONDS ?? 30);
const SERIAL = 10;
/** How long the cycles still running when the schedule ends may take to finish before they count as failed. */
const DRAIN_MS = 120_000;


/** One create → first command → kill; the create → first command time, or the failure's short reason. */
async function cycle(): Promise<number | string> {
  const t0 = performance.now();
  let sbx: Sandbox | undefined;
  try {
    sbx = await Sandbox.create({ timeoutMs: 120_000 });
    await sbx.commands.run('true');
    return performance.now() - t0;
  } catch (err) {
    return (err as Error).name || 'Error';
  } finally {
    await sbx?.kill().catch(() => undefined);
  }
}

deployment();
await poolsSettled();
// The deployment's own CPU at rest (its pools' idle sandboxes, the servers' timers), taken out of the cycles' figure.
const restPerMs = await restingBusyPerMs();
const serial: number[] = [];
const busyBefore = machineBusyMs();
const serialStart = performance.now();
for (let i = 0; i < SERIAL; i++) {
  const r = await cycle();
  if (typeof r === 'number') serial.push(r);
}
await poolsSettled();
// The last cycles' teardowns and refills run on the host after their pools report full again: they are counted too.
await untilAtRest(restPerMs);
const cycleCpuMs = (machineBusyMs() - busyBefore - restPerMs * (performance.now() - serialStart)) / SERIAL;
const nodeStartCpuMs = bareNodeStartCpuMs();

const latencies: number[] = [];
const failures = new Map<string, number>();
let inFlight = 0;
let maxInFlight = 0;
let lastDone = 0;
const total = Math.round(RATE * SECONDS);
const runs: Promise<void>[] = [];
const start = performance.now();
const progress = setInterval(() => say(`  ${((performance.now() - start) / 1000).toFixed(0)} s: ${latencies.length} done, ${inFlight} in flight, ${[...failures.values()].reduce((a, b) => a + b, 0)} failed`), 5_000);
for (let i = 0; i < total; i++) {
  // The i-th arrival is due at i / RATE seconds, however long the earlier ones take.
  const due = start + (i * 1000) / RATE;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  inFlight++;
  maxInFlight = Math.max(maxInFlight, inFlight);
  runs.push(
    cycle().then((r) => {
      inFlight--;
      lastDone = performance.now();
      if (typeof r === 'number') latencies.push(r);
      else failures.set(r, (failures.get(r) ?? 0) + 1);
    }),
  );
}
const backlog = inFlight;
const scheduleEnd = performance.now();
await Promise.race([Promise.all(runs), new Promise((r) => setTimeout(r, DRAIN_MS))]);
clearInterval(progress);
const unfinished = inFlight;
if (unfinished) failures.set('unfinished', unfinished);
const failed = [...failures.values()].reduce((a, b) => a + b, 0);
if (failed) say(`  failures: ${JSON.stringify(Object.fromEntries(failures))}`);

const label = `sustained ${RATE}/s for ${SECONDS} s`;
const serialP50 = percentile(serial, 50);
report('the deployment at rest: machine CPU a second', restPerMs * 1000, 'ms');
report('one cycle one at a time: machine CPU, refill included', cycleCpuMs, 'ms', undefined, { value: nodeStartCpuMs, label: "a bare node start with envd's flags" });
report(`cycles a second ${cores} cores give at a lone cycle's CPU (cores / that CPU)`, (cores * 1000) / cycleCpuMs, '1/s', `≥ ${RATE}`);
report(`${label}: completed per second`, (latencies.length * 1000) / (Math.max(lastDone, scheduleEnd) - start), '1/s', `≥ ${RATE}`);
report(`${label}: create→first command p50`, percentile(latencies, 50), 'ms', undefined, { value: serialP50, label: 'one at a time, same run' });
report(`${label}: create→first command p95`, percentile(latencies, 95), 'ms', '≤ 250', { value: serialP50, label: 'one at a time p50, same run' });
report(`${label}: cycles in flight when the schedule ended`, backlog, 'count');
report(`${label}: most cycles in flight at once`, maxInFlight, 'count');
report(`${label}: failed cycles`, failed, 'count', '0');
// Of those, the creates the team's limit of running sandboxes refused at once (429): an open loop the cores cannot
// keep up with holds that many in flight, and the limit is what bounds it. The other failures are the ones to fix.
report(`${label}: of which refused at the team's sandbox limit (429)`, failures.get('RateLimitError') ?? 0, 'count');
process.exit(0);
