import { existsSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ENVD_EXEC } from '@cove/contracts/sandbox';

/**
 * What envd starts is the OOM killer's first choice over envd itself (which runs at 0, as E2B's envd
 * gives its commands 100). Raising needs no privilege; a child may lower itself back to the floor it
 * inherited, which the host keeps at 0 for the whole sandbox.
 */
const CHILD_OOM_SCORE_ADJ = 100;

/**
 * The bundle's envd-exec (native/envd-exec.c), beside envd's own file: it sets the score, then becomes the
 * command, so there is no moment the command runs at envd's score. Absent when envd runs unbundled (its tests).
 */
const helper = ((): string | undefined => {
  const path = fileURLToPath(new URL(ENVD_EXEC, import.meta.url));
  return existsSync(path) ? path : undefined;
})();

/** What to exec for `file args`, and whether the child will have its score by the time it runs. */
export function raisedLaunch(file: string, args: string[]): { file: string; args: string[]; raised: boolean } {
  if (!helper) return { file, args, raised: false };
  return { file: helper, args: [String(CHILD_OOM_SCORE_ADJ), file, ...args], raised: true };
}

/**
 * Without the helper: raise the child once `spawn` has returned. That is after its exec, so a fast child can
 * still read, or fork with, envd's score first.
 */
export function raiseChild(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/oom_score_adj`, String(CHILD_OOM_SCORE_ADJ));
  } catch {
    // already gone, or /proc not ours (tests on a host): the child keeps envd's score
  }
}
