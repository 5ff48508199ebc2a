// What a piece of work costs the whole machine in CPU, for the benches that compare a rate with what the cores can
// give: the bench, the deployment and every sandbox share them, so a rate's ceiling is cores / CPU per unit of work.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ENVD_NODE_FLAGS } from '@cove/contracts/sandbox';

/** Linux reports /proc/stat and /proc/<pid>/stat times in USER_HZ ticks, 100 a second on every architecture it runs on. */
const TICK_MS = 10;

/** The machine's online CPUs: one `cpuN` line each in /proc/stat (every process on the machine shares them). */
export const cores = readFileSync('/proc/stat', 'utf8').split('\n').filter((l) => /^cpu\d/.test(l)).length;

/** The aggregate `cpu` line of /proc/stat, in ticks by field; `all` is the sum of every field on it. */
export function cpuTicks(): { user: number; nice: number; system: number; idle: number; iowait: number; irq: number; softirq: number; all: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0] = f;
  return { user, nice, system, idle, iowait, irq, softirq, all: f.reduce((a, b) => a + b, 0) };
}

/**
 * The machine's busy time so far, in ms: user, nice, system, irq and softirq of every core. Not steal (a neighbour's
 * time on a shared host) and not iowait (idle).
 */
export function machineBusyMs(): number {
  const t = cpuTicks();
  return (t.user + t.nice + t.system + t.irq + t.softirq) * TICK_MS;
}

/** One window of the rest measurement, and how many the rest is the median of. */
const REST_WINDOW_MS = 1_000;
const REST_WINDOWS = 20;
/** Windows in a row at rest that end a wait for the machine to come back to rest. */
const QUIET_WINDOWS = 3;

/** The machine's busy time a ms over one window. */
async function busyPerMsOver(ms: number): Promise<number> {
  const busy = machineBusyMs();
  const start = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return (machineBusyMs() - busy) / (performance.now() - start);
}

/**
 * The machine's busy time a ms while nothing is asked of it: the median of twenty one-second windows. Pools that
 * report full still have work in flight on the host for seconds (teardowns, new envds' first seconds: measured
 * 90–210 ms/s in 2–9 s of them against 20–50 at rest), which one five-second window counted whole.
 */
export async function restingBusyPerMs(): Promise<number> {
  const windows: number[] = [];
  for (let i = 0; i < REST_WINDOWS; i++) windows.push(await busyPerMsOver(REST_WINDOW_MS));
  windows.sort((a, b) => a - b);
  return (windows[REST_WINDOWS / 2 - 1]! + windows[REST_WINDOWS / 2]!) / 2;
}

/**
 * Waits until three one-second windows in a row are back within 10 ms/s (or a fifth) of `restPerMs`, at most
 * `withinMs`: the teardowns and refills a piece of work started are then done, and their CPU can be counted.
 */
export async function untilAtRest(restPerMs: number, withinMs = 60_000): Promise<void> {
  const deadline = performance.now() + withinMs;
  let quiet = 0;
  while (quiet < QUIET_WINDOWS && performance.now() < deadline) {
    const rate = await busyPerMsOver(REST_WINDOW_MS);
    quiet = rate <= restPerMs + Math.max(0.01, restPerMs / 5) ? quiet + 1 : 0;
  }
}

/** CPU of this process's waited-for children so far (cutime + cstime), in ms. */
function childrenCpuMs(): number {
  // Fields after the command's closing parenthesis; cutime and cstime are the 16th and 17th of the whole line.
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[13]) + Number(f[14])) * TICK_MS;
}

/**
 * Mean CPU of a bare `node -e ''` with envd's flags, over `runs` starts: what any sandbox agent written for Node pays
 * before its first line, the part of a create no change to envd's own code can remove.
 */
export function bareNodeStartCpuMs(runs = 20): number {
  const before = childrenCpuMs();
  for (let i = 0; i < runs; i++) {
    const r = spawnSync(process.execPath, [...ENVD_NODE_FLAGS, '-e', ''], { stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`a bare node start failed: ${r.error?.message ?? `exit ${r.status}`}`);
  }
  return (childrenCpuMs() - before) / runs;
}
