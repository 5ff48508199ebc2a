// A build's log: entries in memory for BuildStatus paging, mirrored to `templates/builds/<buildId>/logs.jsonl`
// so a restarted node (or another node) can still answer. Storage objects are written whole (no append in
// the BlobStore contract), so the file is rewritten at most once a second while the build runs and once
// at the end.

import type { BlobStore } from '@cove/storage';
import type { Logger } from 'pino';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface LogEntry {
  /** ms since the epoch. */
  timestamp: number;
  level: LogLevel;
  message: string;
  /** "base", "finalize", "<n>" or "". */
  step: string;
}

/** Longest message kept (a single output line); longer ones are cut with a marker. */
const MAX_MESSAGE = 8 * 1024;
/** Entries kept per build; past it only a notice is added (a runaway RUN must not exhaust the node). */
const MAX_ENTRIES = 50_000;
const FLUSH_INTERVAL_MS = 1000;

export function logsKey(buildId: string): string {
  return `templates/builds/${buildId}/logs.jsonl`;
}

export function parseLogs(text: string): LogEntry[] {
  const out: LogEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as Partial<LogEntry>;
      if (typeof e.message !== 'string') continue;
      out.push({ timestamp: Number(e.timestamp) || 0, level: (e.level as LogLevel) ?? 'info', message: e.message, step: e.step ?? '' });
    } catch {
      // A torn last line cannot happen (whole-object writes), but a foreign line must not break paging.
    }
  }
  return out;
}

export class BuildLog {
  readonly entries: LogEntry[] = [];
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private capped = false;

  constructor(
    private readonly store: BlobStore,
    private readonly buildId: string,
    private readonly log: Logger,
    /** Sees every entry kept (the node's telemetry sends it on as a build log record). */
    private readonly onEntry?: (e: LogEntry) => void,
  ) {}

  add(level: LogLevel, message: string, step = ''): void {
    if (this.entries.length >= MAX_ENTRIES) {
      if (this.capped) return;
      this.capped = true;
      message = `log limit of ${MAX_ENTRIES} entries reached; further output is dropped`;
      level = 'warn';
    }
    const text = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE)} …[cut]` : message;
    const entry = { timestamp: Date.now(), level, message: text, step };
    this.entries.push(entry);
    this.onEntry?.(entry);
    this.dirty = true;
    this.timer ??= setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, FLUSH_INTERVAL_MS);
    this.timer.unref();
  }

  /** Writes the whole log to storage if it changed; failures are logged, never thrown (the build goes on). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (!this.dirty) return;
      this.dirty = false;
      const body = Buffer.from(this.entries.map((e) => JSON.stringify(e)).join('\n') + '\n');
      try {
        await this.store.put(logsKey(this.buildId), body);
      } catch (err) {
        this.dirty = true;
        this.log.warn({ err }, 'writing build logs to storage failed');
      }
    });
    return this.flushing;
  }

  /** Final write; stops the timer. */
  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.flush();
  }
}
