// Steps that are independent run together, but a failure is thrown only once every one of them has ended: a
// caller that cleans up after a failure must not race a step that is still running.

/** Waits for every promise; then throws the first failure in list order, if any. */
export async function settleAll(steps: ReadonlyArray<Promise<unknown>>): Promise<void> {
  const settled = await Promise.allSettled(steps);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
