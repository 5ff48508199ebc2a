import { ENVD_LOG_LIMITS, type EnvdLogEntry, type EnvdLogsReply, type LogLevel } from '@cove/contracts/telemetry';

/** Bytes the ring may hold (JSON size of its entries): the oldest entries make room for new ones. */
export const LOG_RING_MAX_BYTES = 1024 * 1024;

export type LogFields = Record<string, string | number | boolean | undefined>;

function clip(s: string, max: number): string {
  return s.length <= max ? s : s.slice(0, max - 1) + '…';
}

/**
 * What envd records about itself for the sandbox's logs (init, process start/end, watchers, its own errors),
 * never a process's output. Bounded in bytes; the orchestrator pulls it through `GET /cove/logs`.
 */
export class LogRing {
  private readonly entries: { e: EnvdLogEntry; size: number }[] = [];
  private head = 0;
  private bytes = 0;
  private lastSeq = 0;
  /** Held `waitBeyond` calls, woken by the next entry. */
  private readonly waiters = new Set<() => void>();

  constructor(private readonly maxBytes = LOG_RING_MAX_BYTES) {}

  record(level: LogLevel, message: string, fields: LogFields = {}): void {
    const clean: EnvdLogEntry['fields'] = {};
    let n = 0;
    for (const [k, v] of Object.entries(fields)) {
      if (v === undefined) continue;
      if (n++ >= ENVD_LOG_LIMITS.fields) break;
      clean[clip(k, ENVD_LOG_LIMITS.fieldKeyChars)] = typeof v === 'string' ? clip(v, ENVD_LOG_LIMITS.fieldValueChars) : v;
    }
    const e: EnvdLogEntry = { seq: ++this.lastSeq, ts: new Date().toISOString(), level, message: clip(message, ENVD_LOG_LIMITS.messageChars), fields: clean };
    const size = Buffer.byteLength(JSON.stringify(e));
    this.entries.push({ e, size });
    this.bytes += size;
    while (this.bytes > this.maxBytes && this.head < this.entries.length - 1) {
      this.bytes -= this.entries[this.head].size;
      this.head++;
    }
    // Compact now and then so the array does not grow with what was overwritten.
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries.splice(0, this.head);
      this.head = 0;
    }
    for (const wake of this.waiters) wake();
  }

  /** The last seq recorded (0 before the first entry). */
  get last(): number {
    return this.lastSeq;
  }

  /**
   * Resolves once the last seq is not `after` (at once if it already is: no entry recorded before the call is
   * missed), after `ms`, or when `signal` aborts; nothing of it is left behind in any of the three.
   */
  waitBeyond(after: number, ms: number, signal: AbortSignal): Promise<void> {
    if (this.lastSeq !== after || ms <= 0 || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      this.waiters.add(done);
    });
  }

  /** Waits held now (tests). */
  get waiting(): number {
    return this.waiters.size;
  }

  /** Entries with seq > `after`, oldest first, at most `limit`; `dropped` counts those the ring overwrote. */
  read(after: number, limit: number): EnvdLogsReply {
    // A cursor past the end is from a previous envd (restarted, seq began again): start over.
    if (after > this.lastSeq) after = 0;
    const live = this.entries.length - this.head;
    const oldest = live > 0 ? this.entries[this.head].e.seq : this.lastSeq + 1;
    const dropped = Math.max(0, oldest - 1 - after);
    const start = this.head + Math.max(0, after + 1 - oldest);
    const out = this.entries.slice(start, start + Math.min(limit, ENVD_LOG_LIMITS.maxEntries)).map((x) => x.e);
    return { entries: out, dropped, next: out.length > 0 ? out[out.length - 1].seq : Math.max(after, oldest - 1) };
  }

  get size(): number {
    return this.bytes;
  }
}
