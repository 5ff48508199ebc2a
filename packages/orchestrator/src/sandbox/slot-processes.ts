// A slot's processes as the host sees them: tini (PID 1 inside) and envd (PID 2), their OOM floor, and killing
// every process of the slot's cgroup.

import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cgroups } from './cgroups.js';
import { BootFailed, CheckpointError } from './runtime-errors.js';

/** The direct children of host pid `pid` (its main thread's), or null when it is gone. */
export async function childPids(pid: number): Promise<number[] | null> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => null);
  return text === null ? null : text.split(/\s+/).map(Number).filter((n) => n > 0);
}

/** The first child of tini (envd), polled briefly: tini forks it right after starting. */
export async function childOf(initPid: number, slotId: string): Promise<number> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const children = await childPids(initPid);
    if (children === null) break;
    if (children[0] !== undefined) return children[0];
    await sleep(5);
  }
  throw new BootFailed(slotId, 'the first process did not start under tini');
}

/** The restored envd: the process under `initPid` that is PID 2 in the sandbox's pid namespace. */
export async function envdOf(initPid: number, slotId: string): Promise<number> {
  for (const c of (await childPids(initPid)) ?? []) {
    const status = await readFile(`/proc/${c}/status`, 'utf8').catch(() => '');
    if (/^NSpid:.*\s2$/m.test(status)) return c;
  }
  throw new CheckpointError(slotId, 'the restored tree has no first process (pid 2) under tini');
}

/**
 * tini and envd run at oom_score_adj 0 and what envd starts raises itself to 100 (envd's envd-exec), so the OOM killer
 * still prefers a sandbox's own processes over envd. Never below 0: a privileged write also sets
 * oom_score_adj_min, which every descendant inherits as the floor it may lower itself back to, so -998 here let
 * any sandbox process shield itself while host daemons died first. Writing 0 as root also lifts a negative floor
 * inherited from the orchestrator's own unit. False when the host refused (no CAP_SYS_RESOURCE).
 */
export async function setOomFloor(pids: number[]): Promise<{ ok: boolean; err?: unknown }> {
  let first: unknown;
  for (const pid of pids) {
    const err = await writeFile(`/proc/${pid}/oom_score_adj`, '0').then(() => undefined, (e: unknown) => e);
    first ??= err;
  }
  return first === undefined ? { ok: true } : { ok: false, err: first };
}

/** SIGKILLs every process in the slot's cgroup until none is left or `timeoutMs` passed; whether none is left. */
export async function killSlotProcesses(cgroups: Cgroups, slotId: string, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await cgroups.pidsOf(slotId).catch(() => [])).length === 0) return true;
    if (Date.now() > deadline) return false;
    await cgroups.killAll(slotId).catch(() => undefined);
    await sleep(20);
  }
}
