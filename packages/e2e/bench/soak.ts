// `cove bench --soak`: create / run / pause / resume / run / kill cycles through the unchanged SDK, as fast as
// COVE_SOAK_WORKERS closed-loop workers go, for COVE_SOAK_MINUTES; then, once the warm pools are full again, the
// node's host objects (mounts, loop devices, veths, cgroups, nft elements and rules, slot and snapshot dirs) must be
// exactly where they were before the load; the fds of the orchestrators, edge, collector and control plane where
// they were after a warm-up (first caches and connection pools filled, code compiled), their live heap no longer
// growing (its floor in the second half against the first: heap-census.ts) and their RSS not growing grossly.
// Figures go out as BENCH_RESULT lines (value = after, baseline = before); `soak leaks` counts what did not come
// back, which makes `cove bench --soak` exit non-zero. Not named *.bench.ts: the plain `cove bench` does not run it.
import { Sandbox } from 'e2b';
import { deployment } from '../test/deployment.js';
import { hostCensus, processCensus, type Count } from './host-census.js';
import { HeapSampler } from './heap-census.js';
import { percentile, report, say } from './stats.js';
import { poolsSettled } from './warm-pools.js';

const MINUTES = Number(process.env.COVE_SOAK_MINUTES ?? 30);
/** Concurrent cycles: the sustainable rate on 2 cores is where creates stop queueing behind each other. */
const WORKERS = Number(process.env.COVE_SOAK_WORKERS ?? 4);
/** After this share of the run (at most 2 minutes) the processes' fds are taken as their start. */
const WARMUP_MS = Math.min(120_000, MINUTES * 60_000 * 0.2);
/**
 * RSS is judged on its trend, from mid-run (between the warm-up and the end) to the end: a Node process grows its
 * heap to a working size and keeps it (the edge's reached ~123 MiB in both a 366- and a 571-cycle run), while a
 * leak keeps growing with the cycles, so half of what it leaks over the run shows after mid-run.
 */
const MID_MS = (WARMUP_MS + MINUTES * 60_000) / 2;
/** Host objects must return exactly; these bound how long they may take (slot teardown, pool refill, commits). */
const SETTLE_MS = 120_000;
/**
 * What a process may gain without being called a leak. fds over the warm-up: keep-alive sockets come and go with
 * traffic. The live heap (heap-census.ts) over mid-run: V8's compiled code still grows a little as the JIT
 * optimises (~1–2 MiB over the first few hundred cycles). RSS over mid-run only catches a gross native leak: V8
 * and malloc keep freed pages, so RSS climbs ~20 MiB after mid-run with the live heap flat (measured with heap
 * snapshots, docs/performance.md "The soak"). A leak of 10 KiB per cycle passes the heap's slack in a few hundred
 * cycles, which a 30-minute soak runs several times over.
 */
const FD_SLACK = 16;
const HEAP_SLACK_MIB = (mid: number) => Math.max(4, mid * 0.1);
const RSS_SLACK_MIB = (mid: number) => Math.max(48, mid * 0.3);
/** How often the components' used heap is read (its low points, after collections, are the live heap). */
const HEAP_SAMPLE_MS = 5_000;

/** A figure with, as its baseline, what it was before the load (soak's value = after). */
function emit(name: string, value: number, unit: string, baseline?: number, baselineLabel?: string): void {
  report(name, value, unit, undefined, baseline === undefined ? undefined : { value: baseline, label: baselineLabel ?? '' });
}

const steps = { create: [] as number[], run: [] as number[], pause: [] as number[], resume: [] as number[], kill: [] as number[] };
const failures: string[] = [];

async function timed<T>(step: keyof typeof steps, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const v = await f();
  steps[step].push(performance.now() - t0);
  return v;
}

/** One cycle; a failure is recorded (it is lost work) and the sandbox, if any, still killed. */
async function cycle(): Promise<void> {
  let sbx: Sandbox | undefined;
  try {
    sbx = await timed('create', () => Sandbox.create({ timeoutMs: 300_000 }));
    const s = sbx;
    const first = await timed('run', () => s.commands.run('echo soak > /tmp/soak && cat /tmp/soak'));
    if (first.stdout.trim() !== 'soak') throw new Error(`run answered ${JSON.stringify(first.stdout)}`);
    if (!(await timed('pause', () => s.pause()))) throw new Error('pause answered false');
    const resumed = await timed('resume', () => Sandbox.connect(s.sandboxId, { timeoutMs: 300_000 }));
    const again = await timed('run', () => resumed.commands.run('cat /tmp/soak'));
    if (again.stdout.trim() !== 'soak') throw new Error(`after resume the file read ${JSON.stringify(again.stdout)}`);
    await timed('kill', () => resumed.kill());
    sbx = undefined;
  } catch (err) {
    failures.push(`${new Date().toISOString()} ${sbx?.sandboxId ?? '(no sandbox)'}: ${(err as Error).message}`);
    await sbx?.kill().catch(() => undefined);
  }
}

const byKey = (cs: Count[]) => new Map(cs.map((c) => [c.key, c]));

/** What of `after` is above `before` (beyond `slack`), with the objects that are new. */
function grown(before: Count[], after: Count[], slack: (c: Count) => number): Array<{ key: string; before: number; after: number; added: string[] }> {
  const b = byKey(before);
  return after.flatMap((a) => {
    const was = b.get(a.key);
    if (!was || a.value <= was.value + slack(was)) return [];
    const had = new Set(was.items ?? []);
    return [{ key: a.key, before: was.value, after: a.value, added: (a.items ?? []).filter((i) => !had.has(i)).slice(0, 10) }];
  });
}

const d = deployment();
await poolsSettled();
const hostBefore = hostCensus(d.stateDir);
// The census sees what it compares: with the pools full every node has slots, and so mounts, loops, veths, cgroups.
const blind = hostBefore.filter((c) => / (mounts|loop devices|veths|cgroups|slot dirs)$/.test(c.key) && c.value === 0);
if (blind.length > 0) throw new Error(`the host census finds none of: ${blind.map((c) => c.key).join(', ')} (with the warm pools full)`);
say(`soak: ${MINUTES} min, ${WORKERS} workers; host before: ${hostBefore.map((c) => `${c.key}=${c.value}`).join(', ')}`);

const heap = new HeapSampler(d);
const t0 = Date.now();
const end = t0 + MINUTES * 60_000;
heap.start(HEAP_SAMPLE_MS);
let cycles = 0;
let procStart: Count[] | undefined;
let procMid: Count[] | undefined;
let lastSay = t0;
await Promise.all(
  Array.from({ length: WORKERS }, async () => {
    while (Date.now() < end) {
      await cycle();
      cycles++;
      if (!procStart && Date.now() - t0 >= WARMUP_MS) procStart = processCensus(d.stateDir);
      if (!procMid && Date.now() - t0 >= MID_MS) procMid = processCensus(d.stateDir);
      if (Date.now() - lastSay > 30_000) {
        lastSay = Date.now();
        say(`soak: ${Math.round((Date.now() - t0) / 1000)} s, ${cycles} cycles, ${failures.length} failed`);
      }
    }
  }),
);
const loadEnd = Date.now();
heap.stop();
const seconds = (loadEnd - t0) / 1000;
procStart ??= processCensus(d.stateDir);
procMid ??= processCensus(d.stateDir);
// The live heap over the first half after warm-up against the second half: a floor of few samples is no floor.
const heapFirst = heap.floors(t0 + WARMUP_MS, t0 + MID_MS);
const heapSecond = heap.floors(t0 + MID_MS, loadEnd + 1);
if (heap.count(t0 + WARMUP_MS, t0 + MID_MS) < 6 || heap.count(t0 + MID_MS, loadEnd + 1) < 6) {
  throw new Error(`too few heap samples to judge (${heap.errors.slice(0, 3).join('; ') || 'run longer'})`);
}

// Settled: pools full (a heartbeat after the last kill), then the host objects back where they were (teardown and
// the pools' refill finish in the background); whatever has not come back by the bound is what leaked.
const settledFrom = Date.now();
await poolsSettled();
let hostAfter = hostCensus(d.stateDir);
while (grown(hostBefore, hostAfter, () => 0).length > 0 && Date.now() - settledFrom < SETTLE_MS) {
  await new Promise((r) => setTimeout(r, 1000));
  await poolsSettled();
  hostAfter = hostCensus(d.stateDir);
}
const procAfter = processCensus(d.stateDir);

const leaks = [
  ...grown(hostBefore, hostAfter, () => 0),
  ...grown(procStart.filter((c) => c.unit === 'count'), procAfter.filter((c) => c.unit === 'count'), () => FD_SLACK),
  ...grown(heapFirst, heapSecond, (c) => HEAP_SLACK_MIB(c.value)),
  ...grown(procMid.filter((c) => c.unit === 'MiB'), procAfter.filter((c) => c.unit === 'MiB'), (c) => RSS_SLACK_MIB(c.value)),
];

emit('soak cycles (create, run, pause, resume, run, kill)', cycles, 'count');
emit('soak cycles per minute', cycles / (seconds / 60), '1/min');
emit('soak failed cycles', failures.length, 'count');
for (const [step, times] of Object.entries(steps) as Array<[string, number[]]>) {
  emit(`soak ${step} p50`, percentile(times, 50), 'ms');
  emit(`soak ${step} p95`, percentile(times, 95), 'ms');
}
for (const c of hostAfter) emit(`soak ${c.key}`, c.value, c.unit, byKey(hostBefore).get(c.key)?.value, 'before the load');
for (const c of procAfter) {
  if (c.unit === 'MiB') emit(`soak ${c.key}`, c.value, c.unit, byKey(procMid).get(c.key)?.value, 'at mid-run');
  else emit(`soak ${c.key}`, c.value, c.unit, byKey(procStart).get(c.key)?.value, 'after warm-up');
}
for (const c of heapSecond) emit(`soak ${c.key}`, c.value, c.unit, byKey(heapFirst).get(c.key)?.value, 'first half');
emit('soak leaks', leaks.length, 'count');

for (const f of failures.slice(0, 20)) say(`soak: failed cycle: ${f}`);
for (const l of leaks) say(`soak: LEAK ${l.key}: ${l.before.toFixed(1)} → ${l.after.toFixed(1)}${l.added.length ? ` (new: ${l.added.join('; ')})` : ''}`);
if (leaks.length === 0) say('soak: every host object and process figure ended where it started');
