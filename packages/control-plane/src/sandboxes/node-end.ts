// The end time a node is given. A node kills a sandbox at its end time on its own (so a partitioned or
// restarted control plane leaks nothing), but a sandbox created with autoPause must be paused by the control
// plane's evictor at that time, not killed by the node a moment earlier: its node gets the end time plus a
// grace period, after which it still ends even if the control plane never came.

/** Long enough for an evictor pass and a pause of a large sandbox, short enough to bound a leak. */
export const AUTO_PAUSE_NODE_GRACE_MS = 10 * 60_000;

export function nodeEndMs(sandbox: { autoPause: boolean }, endMs: number): number {
  return sandbox.autoPause ? endMs + AUTO_PAUSE_NODE_GRACE_MS : endMs;
}
