// The cluster collector's query API as the public port reads it (docs/observability.md, "Collector query API"):
// bearer token, a deadline per call, a bounded reply, and every reply checked against the shape it must have
// before any of it is served. Log text in it is the sandbox's (hostile): it is only ever passed on as data.

import { request } from 'undici';
import { z } from 'zod';
import { readCapped, ReplyTooLarge } from './grant-verifier.js';

/** Largest collector reply read (1000 log entries with fields fit well below). */
const MAX_REPLY_BYTES = 8 * 1024 * 1024;

const level = z.enum(['debug', 'info', 'warn', 'error']).catch('info');
const fields = z.record(z.string().max(16_384)).catch({});
const LogEntry = z.object({ timestamp: z.string().max(64), level, message: z.string(), fields: fields.default({}) });
export type LogEntry = z.infer<typeof LogEntry>;
export const SandboxLogsReply = z.object({
  logs: z.array(z.object({ timestamp: z.string().max(64), line: z.string() })).max(10_000).default([]),
  logEntries: z.array(LogEntry).max(10_000).default([]),
});
const num = z.number().finite();
/** E2B's edge metric shape (snake_case). */
export const EdgeMetric = z.object({
  timestamp: z.string().max(64),
  timestamp_unix: num,
  cpu_used_pct: num,
  cpu_count: num,
  mem_total: num,
  mem_used: num,
  mem_cache: num.default(0),
  disk_total: num,
  disk_used: num,
});
export type EdgeMetric = z.infer<typeof EdgeMetric>;
export const MetricsReply = z.array(EdgeMetric).max(100_000);
export const ManyMetricsReply = z.object({ sandboxes: z.record(EdgeMetric) });
export const BuildLogsReply = z.object({
  logEntries: z.array(LogEntry.extend({ step: z.string().max(64).optional() })).max(10_000).default([]),
});

/** The collector failed or answered out of shape: 502 to the caller, with no detail of the reply. */
export class CollectorFailed extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CollectorFailed';
  }
}

export class CollectorClient {
  constructor(private readonly o: { url: string; token: string; timeoutMs: number }) {}

  async get<T extends z.ZodTypeAny>(path: string, query: Record<string, string | number | undefined>, shape: T): Promise<z.output<T>> {
    const url = new URL(`${this.o.url}${path}`);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    let res;
    try {
      res = await request(url, {
        headers: { authorization: `Bearer ${this.o.token}`, accept: 'application/json' },
        headersTimeout: this.o.timeoutMs,
        bodyTimeout: this.o.timeoutMs,
        signal: AbortSignal.timeout(this.o.timeoutMs),
      });
    } catch (err) {
      throw new CollectorFailed('the cluster collector cannot be reached', { cause: err });
    }
    let text: string;
    try {
      text = await readCapped(res.body, MAX_REPLY_BYTES);
    } catch (err) {
      throw new CollectorFailed(err instanceof ReplyTooLarge ? 'the cluster collector answered too much' : 'the cluster collector reply was cut off', { cause: err });
    }
    if (res.statusCode !== 200) throw new CollectorFailed(`the cluster collector answered ${res.statusCode}`);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new CollectorFailed('the cluster collector answered something that is not JSON');
    }
    const parsed = shape.safeParse(json);
    if (!parsed.success) throw new CollectorFailed('the cluster collector answered out of shape');
    return parsed.data as z.output<T>;
  }
}
