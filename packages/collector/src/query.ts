// The query API's parameters and response shapes: E2B's edge API (spec/openapi-edge.yml, openapi/query.yaml).
// Parameters are parsed here once; a malformed one is a 400 naming it, a too-large limit is clamped.

import type { LogLevel } from '@cove/contracts/telemetry';
import { z } from 'zod';
import type { Direction, StoredLog, StoredSample } from './store.js';

export const SANDBOX_LOGS_MAX_LIMIT = 1000;
export const BUILD_LOGS_MAX_LIMIT = 100;
export const MANY_METRICS_MAX_IDS = 100;
/** At most this many samples per sandbox-metrics answer (a week at one sample every 2 s is 302,400). */
export const SANDBOX_METRICS_MAX_SAMPLES = 10_000;
export const SEARCH_MAX_CHARS = 256;

/** A request the collector cannot answer as asked; `message` says which parameter and why. */
export class InvalidQuery extends Error {
  readonly code = 'invalid_argument';
}

const id = (what: string) => z.string({ required_error: `${what} is required` }).regex(/^[A-Za-z0-9._:-]{1,128}$/, `${what} must be 1-128 characters of A-Z a-z 0-9 . _ : -`);
const intParam = (what: string, min: number) =>
  z
    .string()
    .regex(/^-?\d{1,16}$/, `${what} must be an integer`)
    .transform(Number)
    .refine((n) => n >= min, `${what} must be at least ${min}`);
const direction = z.enum(['forward', 'backward'], { errorMap: () => ({ message: 'direction must be forward or backward' }) });
const level = z.enum(['debug', 'info', 'warn', 'error'], { errorMap: () => ({ message: 'level must be debug, info, warn or error' }) });

/** A single value from a query: fastify gives an array for a repeated key, which is refused where one is meant. */
function single(q: Record<string, unknown>, key: string): string | undefined {
  const v = q[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new InvalidQuery(`${key} must be given once`);
  return v;
}

function parse<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new InvalidQuery(r.error.issues.map((i) => i.message).join('; '));
  return r.data;
}

function range(startMs: number | undefined, endMs: number | undefined, nowMs: number, retentionMs: number): { startMs: number; endMs: number } {
  // No upper bound by default: a sender whose clock runs ahead must not hide its newest entries.
  const end = endMs ?? Number.MAX_SAFE_INTEGER;
  const start = startMs ?? Math.max(0, nowMs - retentionMs);
  if (start > end) throw new InvalidQuery('start must not be after end');
  return { startMs: start, endMs: end };
}

const clamp = (n: number | undefined, max: number) => Math.min(n ?? max, max);

export function sandboxLogsQuery(params: Record<string, unknown>, q: Record<string, unknown>, nowMs: number, retentionMs: number) {
  const start = single(q, 'start');
  const end = single(q, 'end');
  const limit = single(q, 'limit');
  const search = single(q, 'search');
  if (search !== undefined && search.length > SEARCH_MAX_CHARS) throw new InvalidQuery(`search must be at most ${SEARCH_MAX_CHARS} characters`);
  return {
    teamId: parse(id('teamID'), single(q, 'teamID')),
    sandboxId: parse(id('sandboxID'), params.sandboxID),
    ...range(start === undefined ? undefined : parse(intParam('start', 0), start), end === undefined ? undefined : parse(intParam('end', 0), end), nowMs, retentionMs),
    limit: clamp(limit === undefined ? undefined : parse(intParam('limit', 0), limit), SANDBOX_LOGS_MAX_LIMIT),
    direction: parse(direction.default('forward'), single(q, 'direction')) as Direction,
    minLevel: parse(level.default('debug'), single(q, 'level')) as LogLevel,
    search: search === '' ? undefined : search,
  };
}

export function buildLogsQuery(params: Record<string, unknown>, q: Record<string, unknown>, nowMs: number, retentionMs: number) {
  const opt = (key: string) => {
    const v = single(q, key);
    return v === undefined ? undefined : parse(intParam(key, 0), v);
  };
  const dir = parse(direction.default('forward'), single(q, 'direction')) as Direction;
  // cursor (E2B's public build-logs route): a timestamp in ms where reading starts, in the reading direction.
  const cursor = opt('cursor');
  let start = opt('start');
  let end = opt('end');
  if (cursor !== undefined) {
    if (dir === 'forward') start = Math.max(start ?? 0, cursor);
    else end = Math.min(end ?? cursor, cursor);
  }
  const limit = opt('limit');
  return {
    teamId: parse(id('teamID'), single(q, 'teamID')),
    templateId: parse(id('templateID'), single(q, 'templateID')),
    buildId: parse(id('buildID'), params.buildID),
    ...range(start, end, nowMs, retentionMs),
    offset: Math.min(opt('offset') ?? 0, 1_000_000),
    limit: clamp(limit, BUILD_LOGS_MAX_LIMIT),
    direction: dir,
    minLevel: parse(level.default('debug'), single(q, 'level')) as LogLevel,
  };
}

export function sandboxMetricsQuery(params: Record<string, unknown>, q: Record<string, unknown>, nowMs: number, retentionMs: number) {
  // Seconds, as E2B's metrics routes take them.
  const sec = (key: string) => {
    const v = single(q, key);
    return v === undefined ? undefined : parse(intParam(key, 0), v) * 1000;
  };
  const r = range(sec('start'), sec('end'), nowMs, retentionMs);
  return {
    teamId: parse(id('teamID'), single(q, 'teamID')),
    sandboxId: parse(id('sandboxID'), params.sandboxID),
    startMs: r.startMs,
    // `end` names a second: every sample inside it counts.
    endMs: q.end === undefined ? r.endMs : r.endMs + 999,
    limit: SANDBOX_METRICS_MAX_SAMPLES,
  };
}

export function manyMetricsQuery(q: Record<string, unknown>) {
  const raw = q.sandbox_ids;
  // Both spellings clients use: repeated keys and one comma-separated value.
  const list = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).flatMap((v) => String(v).split(',')).filter((s) => s !== '');
  if (list.length === 0) throw new InvalidQuery('sandbox_ids is required (one or more sandbox ids)');
  const ids = [...new Set(list)];
  if (ids.length > MANY_METRICS_MAX_IDS) throw new InvalidQuery(`sandbox_ids may name at most ${MANY_METRICS_MAX_IDS} sandboxes`);
  return { teamId: parse(id('teamID'), single(q, 'teamID')), sandboxIds: ids.map((s) => parse(id('sandbox_ids entry'), s)) };
}

// ---- responses -----------------------------------------------------------------------------------------

/**
 * A v1 `line`: the log record as one JSON object, as E2B's v1 route answers (the CLI's `sandbox logs` parses each
 * line and prints its level, logger and fields). Cove's own keys win over a field of the same name.
 */
function v1Line(r: StoredLog): string {
  const logger = typeof r.fields['source'] === 'string' ? r.fields['source'] : 'envd';
  return JSON.stringify({ ...r.fields, logger, level: r.level, message: r.message });
}

export function sandboxLogsBody(rows: StoredLog[]) {
  return {
    logs: rows.map((r) => ({ timestamp: new Date(r.tsMs).toISOString(), line: v1Line(r) })),
    logEntries: rows.map((r) => ({ timestamp: new Date(r.tsMs).toISOString(), level: r.level, message: r.message, fields: r.fields })),
  };
}

export function buildLogsBody(rows: StoredLog[]) {
  return {
    logEntries: rows.map((r) => ({
      timestamp: new Date(r.tsMs).toISOString(),
      level: r.level,
      message: r.message,
      ...(r.step !== null ? { step: r.step } : {}),
      fields: r.fields,
    })),
  };
}

/** E2B's SandboxMetric (snake_case, as the edge API and the SDK's metrics route spell it). */
export function sandboxMetric(s: StoredSample) {
  const n = (v: number | null) => (v === null ? 0 : v);
  const int = (v: number | null) => Math.round(n(v));
  return {
    timestamp: new Date(s.tsMs).toISOString(),
    timestamp_unix: Math.floor(s.tsMs / 1000),
    cpu_used_pct: Math.round(n(s.cpuUsedPct) * 100) / 100,
    cpu_count: int(s.cpuCount),
    mem_total: int(s.memTotal),
    mem_used: int(s.memUsed),
    mem_cache: 0,
    disk_total: int(s.diskTotal),
    disk_used: int(s.diskUsed),
  };
}
