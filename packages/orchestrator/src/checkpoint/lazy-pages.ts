// Lazy restore: `criu restore --lazy-pages` brings the tree back with its anonymous memory registered with
// userfaultfd instead of copied, and a `criu lazy-pages` daemon serves each page from the image on its first
// fault, copying the rest in the background; the tree runs (and envd answers) before its memory is back.
//
// The daemon holds the only reference to each restored task's userfaultfd: were it to die before every page
// is in, the kernel would release those and the missing pages would read as zeros. So its end is watched:
// anything but a clean exit (every page served) kills the slot's whole tree at once (LinuxSandboxRuntime).
// Its lifetime is bounded: it exits by itself once every page is in, is SIGKILLed at a deadline, and with the
// sandbox. It runs in the slot's own cgroups, so whatever memory the tenant makes it spend (its page buffers,
// the page lists of each fork during the transfer) counts against the sandbox's limits, not the node's.

import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { criuCommand, DEFAULT_CRIU, freshLog, killCriu } from './criu.js';
import { run } from '../sandbox/run-command.js';

/** How long a lazy-pages daemon may take to serve every page before it (and so the tree) is killed. */
export const LAZY_DEADLINE_MS = Number(process.env['COVE_CRIU_LAZY_DEADLINE_MS'] ?? 60_000);
/** How long the daemon may take to listen for the restore. */
const READY_TIMEOUT_MS = 10_000;

const probes = new Map<string, Promise<boolean>>();

/**
 * Whether restores with `criu` may be lazy: COVE_CRIU_LAZY=0 never (the bench's same-run baseline; a way out),
 * otherwise when criu is Cove's build (install-criu.sh patch 6 lets a task restored into a user namespace open
 * its userfaultfd) or COVE_CRIU_LAZY=1 vouches for another, /dev/userfaultfd (Linux >= 6.1) is there, and criu
 * finds the userfaultfd features it needs. Probed once per binary.
 */
export function lazyRestoreSupported(criu: string, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const mode = env['COVE_CRIU_LAZY'];
  if (mode === '0' || (criu !== DEFAULT_CRIU && mode !== '1')) return Promise.resolve(false);
  let p = probes.get(criu);
  if (!p) probes.set(criu, (p = probe(criu)));
  return p;
}

async function probe(criu: string): Promise<boolean> {
  try {
    await access('/dev/userfaultfd', constants.R_OK | constants.W_OK);
    const r = await run(criu, ['check', '--feature', 'uffd-noncoop'], { allowFailure: true, nullStdio: true });
    return r.code === 0;
  } catch {
    return false;
  }
}

/** How a daemon ended: `served` every page (exit 0); anything else means pages may be missing. */
export type LazyOutcome = 'served' | 'failed' | 'deadline';

export interface LazyPages {
  readonly pid: number;
  /** Settles once the daemon has exited. */
  readonly done: Promise<LazyOutcome>;
  /** SIGKILLs the daemon (idempotent); `done` then settles `failed` unless it had served everything. */
  kill(): void;
}

/**
 * Starts `criu lazy-pages` for the images in `imagesDir`, listening in `workDir` (the restore must be given the
 * same `-W`), inside the slot's cgroups (`cgroupProcs`: a `cgroup.procs` file per hierarchy, joined before criu
 * runs). Resolves once it listens; rejects if it does not.
 */
export async function startLazyPages(o: {
  criu: string;
  imagesDir: string;
  workDir: string;
  cgroupProcs: string[];
  deadlineMs?: number;
}): Promise<LazyPages> {
  const log = await freshLog(o.workDir, 'lazy-pages');
  // The wrapper joins the slot's cgroups first, so criu and everything it allocates is charged to the slot.
  const cmd = await criuCommand(o.criu, ['lazy-pages', '-D', o.imagesDir, '-W', o.workDir, '--status-fd', '3', '-o', log, '-v2'], o.cgroupProcs);
  const child = spawn(cmd.file, cmd.argv, {
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
    // A group of its own: whatever stops the orchestrator's group (a restart) must not take the tree's memory.
    detached: true,
  });
  let exited = false;
  const exit = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => ((exited = true), resolve(code)));
    child.on('error', () => ((exited = true), resolve(null)));
  });
  const kill = (): void => {
    // The daemon runs under the same kdat wrapper as a restore: the wrapper's death alone would leave it running.
    if (!exited && child.pid !== undefined) void killCriu(child.pid);
  };
  const status = child.stdio[3] as NodeJS.ReadableStream;
  let timer: NodeJS.Timeout | undefined;
  const ready = await Promise.race([
    // criu writes one byte and closes the fd once its socket listens.
    new Promise<boolean>((resolve) => status.once('data', () => resolve(true))),
    exit.then(() => false),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), READY_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  status.on('error', () => undefined);
  (status as NodeJS.ReadableStream & { destroy(): void }).destroy();
  if (!ready) {
    kill();
    await exit;
    throw new Error(`criu lazy-pages did not start (see ${log})`);
  }
  let deadlineHit = false;
  const deadline = setTimeout(() => ((deadlineHit = true), kill()), o.deadlineMs ?? LAZY_DEADLINE_MS);
  deadline.unref();
  const done = exit.then((code): LazyOutcome => {
    clearTimeout(deadline);
    return code === 0 ? 'served' : deadlineHit ? 'deadline' : 'failed';
  });
  return { pid: child.pid ?? -1, done, kill };
}
