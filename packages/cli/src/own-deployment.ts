// The deployments `cove test` and `cove bench` start for themselves: whatever a previous (perhaps crashed) run
// left is torn down first, and this one is torn down on every way out — success, a failure, and SIGINT/SIGTERM
// (Ctrl-C), which abort `up` and the test or benchmark processes first so nothing starts after the teardown.

import { rmSync } from 'node:fs';
import { down, up, type DeploymentOptions } from './deployment.js';

/** Stops what a previous (perhaps crashed) run left and forgets its state: test and bench runs start clean. */
export async function fresh(o: DeploymentOptions): Promise<void> {
  await down({ ...o, say: () => undefined });
  rmSync(o.stateDir, { recursive: true, force: true });
}

/**
 * Runs `body` against a deployment started for it and tears the deployment down afterwards. On SIGINT/SIGTERM
 * `body` gets an aborted signal (it kills its children with it), the teardown runs, and the process exits with
 * 130/143; a second signal during the teardown is ignored, so it is not cut short.
 */
export async function withOwnDeployment<T>(o: DeploymentOptions, body: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (caught) return;
    caught = sig;
    o.say(`==> ${sig}: stopping, then tearing the deployment down`);
    abort.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await fresh(o);
    await up({ ...o, signal: abort.signal });
    return await body(abort.signal);
  } finally {
    try {
      await down(o);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (caught) process.exit(caught === 'SIGINT' ? 130 : 143);
    }
  }
}
