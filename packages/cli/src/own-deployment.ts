// The deployments `cove test` and `cove bench` start for themselves: whatever a previous (perhaps crashed) run
// left is torn down first, and this one is torn down on every way out — success, a failure, and SIGINT/SIGTERM
// (Ctrl-C), which abort `up` and the test or benchmark processes first so nothing starts after the teardown.

import { rmSync } from 'node:fs';
import { down, up, type DeploymentOptions } from './deployment.js';
import { untrustLocalCa } from './local-ca.js';

/** Stops what a previous (perhaps crashed) run left and forgets its state: test and bench runs start clean. */
export async function fresh(o: DeploymentOptions): Promise<void> {
  await down({ ...o, say: () => undefined });
  // The machine must not keep trusting a CA whose key goes with the state dir.
  try {
    untrustLocalCa(o.stateDir, () => undefined);
  } catch (err) {
    o.say(`a previous deployment's CA could not be removed from the trust stores: ${(err as Error).message}`);
  }
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
      // A throwaway deployment's CA is not left in the machine's trust stores (a CI machine would gather one per
      // clone); its files stay with the state for a look afterwards, and the next run starts fresh.
      try {
        untrustLocalCa(o.stateDir, o.say);
      } catch (err) {
        o.say(`the deployment's CA could not be removed from the trust stores: ${(err as Error).message}`);
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (caught) process.exit(caught === 'SIGINT' ? 130 : 143);
    }
  }
}
