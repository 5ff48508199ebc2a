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
