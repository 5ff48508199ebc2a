// Kernel budgets that every sandbox would otherwise share. All sandboxes map to the same host uids and their
// user namespaces are owned by host root (crun's euid), so the kernel charges each sandbox's inotify instances
// and watches, queued signals and POSIX message queues up the user-namespace chain to one counter per type:
// (init namespace, uid 0), shared by every sandbox and by the host's own root processes. Measured before
// this: one sandbox opening inotify instances until EMFILE (128, the host's max_user_instances) left every
// other sandbox and host root unable to open a single one.
//
// The scheme: each sandbox gets its own limits (below: the IPC sysctls through the OCI spec, the rest written by
// the host at boot), and the host's inotify totals are raised so that the node's sandboxes, each at its limit,
// still fit (docs/decisions.md).

import { readFile, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { HOST_OP, run } from './run-command.js';
import { settleAll } from './settle-all.js';

/** Per sandbox user namespace, per uid inside (user.max_inotify_*; the kernel default per user is 128). */
export const SANDBOX_INOTIFY_INSTANCES = 512;
export const SANDBOX_INOTIFY_WATCHES = 65_536;
/** RLIMIT_SIGPENDING of every sandbox process: queued signals (and POSIX timers) per uid inside. */
export const SANDBOX_SIGPENDING = 1024;
/** RLIMIT_MSGQUEUE per uid inside; fits one queue of the sandbox's largest size (below). */
export const SANDBOX_MSGQUEUE_BYTES = 16 * 1024;
/**
 * POSIX message queues per sandbox (its IPC namespace, whatever uid creates them): at most 4 queues of 10
 * messages of 1 KiB (~10.7 KiB of budget each, ~43 KiB per sandbox).
 */
export const SANDBOX_MQUEUE = { queuesMax: 4, msgMax: 10, msgsizeMax: 1024 };

/**
 * Host totals. A sandbox's root can switch to any of its 65536 uids, each with the per-uid limits above, so the
 * count a sandbox can reach is bounded by its memory, not by them: instances and watches are kernel memory
 * charged to the sandbox's memory cgroup (measured: ~0.96 KiB of slab per instance, ~120 B per watch; 40 uids ×
 * 512 = 20 480 instances in a 256 MiB sandbox). So the totals are set above what the node's RAM could hold —
 * one instance per KiB, one watch per 100 bytes — and never below room for 2048 sandboxes at their per-uid
 * limits: memory runs out (inside the offending sandbox's cgroup) before the shared count does.
 */
export const HOST_SANDBOX_ROOM = 2048;
const INT_MAX = 2 ** 31 - 1;

export function hostInotifyTotals(memTotalBytes: number): { instances: number; watches: number } {
  return {
    instances: Math.min(INT_MAX, Math.max(HOST_SANDBOX_ROOM * SANDBOX_INOTIFY_INSTANCES, Math.ceil(memTotalBytes / 1024))),
    watches: Math.min(INT_MAX, Math.max(HOST_SANDBOX_ROOM * SANDBOX_INOTIFY_WATCHES, Math.ceil(memTotalBytes / 100))),
  };
}

/**
 * The IPv4 neighbour (ARP) table is one table for the whole host, every network namespace included, and its
 * hard cap gc_thresh3 (kernel default 1024) counts them all: each sandbox adds two entries that stay fresh while
 * it runs — the host's for the sandbox's address on its veth and the sandbox's own for its gateway (measured:
 * 2.0 per sandbox, `cove bench --density`). So at the default, past ~500 sandboxes the table is over its cap for
 * good: every new entry first has to evict one not updated in the last 5 s (ARP churn), and fails — "neighbor
 * table overflow", the packet dropped — when none is, as in a burst of creates (two fresh entries each). Room
 * for HOST_SANDBOX_ROOM sandboxes on top of the default's 1024 for the host's own neighbours; gc_thresh2 (above
 * which entries idle for 5 s are collected) at the sandboxes' working set, so their entries are not churned.
 * Kernel memory: well under 1 KiB an entry, a few MiB at this cap.
 */
export function hostNeighbourThresholds(): { gcThresh2: number; gcThresh3: number } {
  return { gcThresh2: 2 * HOST_SANDBOX_ROOM, gcThresh3: 1024 + 2 * 2 * HOST_SANDBOX_ROOM };
}

/**
 * fs.pipe-user-pages-soft: pipe buffer pages per host uid (default 16 384 = 64 MiB), above which the kernel gives
 * that uid's new pipes 2 pages and refuses to grow any (F_SETPIPE_SZ: EPERM) without CAP_SYS_RESOURCE. Every
 * sandbox's root is the same host uid, so one tenant holding 64 pipes grown to 1 MiB (no data needed) crossed it
 * for all of them: their pipes shrank, and CRIU, which restores each pipe at its size from inside the sandbox's
 * user namespace, failed every restore on the node ("Unable to open fd"; measured: `cove bench --soak` lost 38
 * of 1294 resumes while other deployments held 300–1150 sandboxes). Pipe buffers are kernel memory charged to the writer's
 * memory cgroup (runtime-pipe-budget.test.ts), so each sandbox's memory limit bounds what it can hold; the
 * per-uid count is set at the host's RAM in pages, where it never binds before memory does.
 */
export function hostPipeUserPages(memTotalBytes: number): number {
  return Math.min(INT_MAX, Math.max(16_384, Math.ceil(memTotalBytes / 4096)));
}

/**
 * Every task of every sandbox (idle: tini, envd and its threads, 8 in all, measured by `cove bench --density`) takes
 * a pid of the host's one pid space, capped by kernel.pid_max: 32 768 by default, which stops a node at ~4000
 * sandboxes with room for nothing running in them. Raised to the kernel's ceiling on 64-bit (PID_MAX_LIMIT, what
 * systemd sets by default since v243): a pid number costs nothing until a task holds it, and each sandbox's own
 * tasks stay bounded by its pids cgroup. kernel.threads-max (from RAM) is the next bound, and is not raised.
 */
export const HOST_PID_MAX = 4_194_304;

/** The OCI `linux.sysctl` entries, for the sandbox's IPC namespace (crun refuses user.*: "not namespaced"). */
export function sandboxSysctls(): Record<string, string> {
  return {
    'fs.mqueue.queues_max': String(SANDBOX_MQUEUE.queuesMax),
    'fs.mqueue.msg_max': String(SANDBOX_MQUEUE.msgMax),
    'fs.mqueue.msgsize_max': String(SANDBOX_MQUEUE.msgsizeMax),
  };
}

/** Raises (never lowers) the host's inotify totals, neighbour-table caps, pipe budget and pid_max; idempotent, part of prepareHost. */
export async function raiseHostKernelBudgets(log: Logger): Promise<void> {
  const memKiB = Number(/^MemTotal:\s+(\d+) kB/m.exec(await readFile('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  const want = hostInotifyTotals(memKiB * 1024);
  const neigh = hostNeighbourThresholds();
  const pipePages = hostPipeUserPages(memKiB * 1024);
  // gc_thresh3 before gc_thresh2, so the soft level is never above the hard one on the way.
  for (const [file, value] of [
    ['/proc/sys/fs/inotify/max_user_instances', want.instances],
    ['/proc/sys/fs/inotify/max_user_watches', want.watches],
    ['/proc/sys/net/ipv4/neigh/default/gc_thresh3', neigh.gcThresh3],
    ['/proc/sys/net/ipv4/neigh/default/gc_thresh2', neigh.gcThresh2],
    ['/proc/sys/fs/pipe-user-pages-soft', pipePages],
    ['/proc/sys/kernel/pid_max', HOST_PID_MAX],
  ] as const) {
    const have = Number((await readFile(file, 'utf8')).trim());
    // 0 is "no limit" for the pipe budget (and never a setting of the others): already above anything we set.
    if (have >= value || (have === 0 && file.endsWith('pipe-user-pages-soft'))) continue;
    await writeFile(file, String(value));
    log.info({ file, from: have, to: value }, 'raised a host kernel budget shared by all sandboxes');
  }
}

/**
 * Applies the per-sandbox limits the OCI spec cannot carry, once the slot runs and before it can be claimed:
 *  - user.max_inotify_*: user sysctls are those of the writer's user namespace, so the write joins it as its root
 *    (host root owns it: full capabilities there); crun refuses user.* sysctls as "not namespaced".
 *  - RLIMIT_SIGPENDING and RLIMIT_MSGQUEUE of tini and envd (what envd starts inherits them): not OCI rlimits,
 *    because crun sets those before it creates the user namespace, and the namespace's own ceiling on the
 *    shared host counter is the creator's limit at that moment. Measured with them in the spec: one sandbox's
 *    1023 queued signals made a second sandbox's first sigqueue fail (EAGAIN).
 * The sandbox's root cannot undo either: it lacks CAP_SYS_RESOURCE, and sees /proc/sys read-only.
 */
export async function applySandboxBudgets(initPid: number, envdPid: number): Promise<void> {
  // Three independent writes: run together (a restore or boot waits for the slowest, not the sum), all settled
  // before a failure is thrown.
  await settleAll([
    run(HOST_OP.usernsSysctl, [
      String(initPid),
      `user/max_inotify_instances=${SANDBOX_INOTIFY_INSTANCES}`,
      `user/max_inotify_watches=${SANDBOX_INOTIFY_WATCHES}`,
    ]),
    ...[initPid, envdPid].map((pid) => run(HOST_OP.prlimit, [String(pid), String(SANDBOX_SIGPENDING), String(SANDBOX_MSGQUEUE_BYTES)])),
  ]);
}
