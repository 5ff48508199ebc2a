// Back-off for background slot boots (the template warm pool and the user-build pool): a failing boot
// waits 1 s, doubling to 60 s, before the pool tries again; a success resets it.

const MIN_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 60_000;

export class BootBackoff {
  /** Consecutive failed boots. */
  failures = 0;
  private retryAt = 0;
  private timer: NodeJS.Timeout | undefined;

  /** Whether the back-off allows a boot at `now`. */
  allows(now: number): boolean {
    return this.retryAt <= now;
  }

  succeeded(): void {
    this.failures = 0;
  }

  /** Records a failure and calls `retry` once its back-off has passed. Returns the back-off in ms. */
  failed(retry: () => void): number {
    this.failures++;
    const backoff = Math.min(MIN_BACKOFF_MS * 2 ** (this.failures - 1), MAX_BACKOFF_MS);
    this.retryAt = Date.now() + backoff;
    clearTimeout(this.timer);
    this.timer = setTimeout(retry, backoff);
    this.timer.unref();
    return backoff;
  }

  cancel(): void {
    clearTimeout(this.timer);
  }
}
