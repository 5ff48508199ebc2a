import { Code, ConnectError } from '@connectrpc/connect';

/**
 * A single-consumer async queue feeding one server stream. Producers push events; the
 * consumer iterates until the queue ends, the request signal aborts, or a keepalive is due.
 * Keepalives are produced here so every stream kind (process, watch) gets them the same way.
 */
export class EventQueue<T> {
  private items: T[] = [];
  private done = false;
  private failure: unknown;
  private wake: (() => void) | undefined;
  /** Called when the consumer has caught up (queue empty again). */
  onDrained: (() => void) | undefined;

  push(item: T): void {
    if (this.done) return;
    this.items.push(item);
    this.notify();
  }

  /** Ends the stream after the queued items are delivered. */
  end(): void {
    this.done = true;
    this.notify();
  }

  /** Ends the stream with an error after the queued items are delivered. */
  fail(err: unknown): void {
    this.failure = err;
    this.end();
  }

  get length(): number {
    return this.items.length;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /**
   * Iterates events. When `signal` aborts the iteration stops: a deadline is rethrown as
   * deadline_exceeded, a client cancel just returns. `keepalive()` is yielded every
   * `keepaliveMs` of wall time (0 disables).
   */
  async *drain(signal: AbortSignal, keepaliveMs: number, keepalive: () => T): AsyncGenerator<T> {
    const onAbort = (): void => this.notify();
    signal.addEventListener('abort', onAbort);
    const timer = keepaliveMs > 0 ? setInterval(() => this.push(keepalive()), keepaliveMs) : undefined;
    timer?.unref();
    try {
      for (;;) {
        if (signal.aborted) {
          const reason: unknown = signal.reason;
          if (reason instanceof ConnectError && reason.code === Code.DeadlineExceeded) throw reason;
          return;
        }
        const item = this.items.shift();
        if (this.items.length === 0) this.onDrained?.();
        if (item !== undefined) {
          yield item;
          continue;
        }
        if (this.done) {
          if (this.failure !== undefined) throw this.failure;
          return;
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      if (timer) clearInterval(timer);
      signal.removeEventListener('abort', onAbort);
    }
  }
}

/** Parses `Keepalive-Ping-Interval` (seconds); E2B's default is 90 s. */
export function keepaliveMsFrom(header: string | null): number {
  if (header === null) return 90_000;
  const n = Number(header);
  if (!Number.isFinite(n) || n <= 0) return 90_000;
  return Math.min(Math.max(n, 1), 3600) * 1000;
}
