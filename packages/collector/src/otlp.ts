// OTLP/HTTP JSON decoding (opentelemetry-proto's JSON mapping: camelCase fields, int64 as number or decimal
// string, enums as numbers) into the collector's own rows. Only what Cove's vocabulary names is kept; a record
// that lacks the attributes its kind needs is rejected (counted in the OTLP partialSuccess), never stored
// half-attributed where no query could find it, or worse, where another team's query could.

import { Attr, levelOfSeverity, NodeMetric, SandboxMetric, type LogLevel } from '@cove/contracts/telemetry';
import { z } from 'zod';

/** A single message is kept up to this many UTF-8 bytes; longer ones are cut and marked. */
export const MAX_MESSAGE_BYTES = 16 * 1024;
/** At most this many `fields` per record, each value up to MAX_FIELD_BYTES. */
export const MAX_FIELDS = 64;
export const MAX_FIELD_BYTES = 1024;
/** All `fields` of one record together stay under this (keys and values). */
export const MAX_FIELDS_BYTES = 4096;
/**
 * How far ahead of the collector's clock a record's time may be. Later ones get the arrival time: a timestamp a
 * sandbox can influence (envd's clock) must not make rows outlive everyone else's under oldest-first retention.
 */
export const MAX_FUTURE_SKEW_MS = 5 * 60_000;
/** Ids are printable tokens; anything else is refused (they key every query). */
const ID = /^[A-Za-z0-9._:-]{1,128}$/;

const int64 = z.union([z.number(), z.string().regex(/^-?\d{1,20}$/)]);
const KeyValue = z.object({ key: z.string().max(256), value: z.unknown().optional() });
const Attributes = z.array(KeyValue).max(1024).optional();
const Resource = z.object({ attributes: Attributes }).optional();

const LogRecord = z.object({
  timeUnixNano: int64.optional(),
  observedTimeUnixNano: int64.optional(),
  severityNumber: z.number().int().min(0).max(24).optional(),
  severityText: z.string().max(64).optional(),
  body: z.unknown().optional(),
  attributes: Attributes,
});
export const LogsRequest = z.object({
  resourceLogs: z
    .array(
      z.object({
        resource: Resource,
        scopeLogs: z.array(z.object({ logRecords: z.array(LogRecord).optional() })).optional(),
      }),
    )
    .optional(),
});

const NumberDataPoint = z.object({
  attributes: Attributes,
  timeUnixNano: int64.optional(),
  asDouble: z.union([z.number(), z.enum(['NaN', 'Infinity', '-Infinity'])]).optional(),
  asInt: int64.optional(),
});
const Metric = z.object({
  name: z.string().max(256),
  gauge: z.object({ dataPoints: z.array(NumberDataPoint).optional() }).optional(),
  sum: z.object({ dataPoints: z.array(NumberDataPoint).optional() }).optional(),
});
export const MetricsRequest = z.object({
  resourceMetrics: z
    .array(
      z.object({
        resource: Resource,
        scopeMetrics: z.array(z.object({ metrics: z.array(Metric).optional() })).optional(),
      }),
    )
    .optional(),
});

export interface LogRow {
  kind: 'sandbox' | 'build';
  teamId: string;
  sandboxId: string | null;
  templateId: string | null;
  buildId: string | null;
  step: string | null;
  tsMs: number;
  level: LogLevel;
  message: string;
  fields: Record<string, string>;
}

export type SandboxGauge = 'cpuUsedPct' | 'cpuCount' | 'memUsed' | 'memTotal' | 'diskUsed' | 'diskTotal';
export interface SandboxPoint {
  teamId: string;
  sandboxId: string;
  /** Whole seconds, in ms: the six gauges of one sample merge on (sandbox, second). */
  tsMs: number;
  gauge: SandboxGauge;
  value: number;
}
export type NodeGauge = keyof typeof NodeMetric;
export interface NodePoint {
  /** `service.name` + `service.instance.id` of the sender: never leaves the collector. */
  source: string;
  gauge: NodeGauge;
  value: number;
  tsMs: number;
}

export interface Decoded<T> {
  rows: T[];
  rejected: number;
  /** Why the first rejected record was refused (OTLP partialSuccess.errorMessage). */
  reason?: string;
}

const SANDBOX_GAUGE: Record<string, SandboxGauge> = {
  [SandboxMetric.cpuUsedPct]: 'cpuUsedPct',
  [SandboxMetric.cpuCount]: 'cpuCount',
  [SandboxMetric.memoryUsed]: 'memUsed',
  [SandboxMetric.memoryTotal]: 'memTotal',
  [SandboxMetric.diskUsed]: 'diskUsed',
  [SandboxMetric.diskTotal]: 'diskTotal',
};
const NODE_GAUGE: Record<string, NodeGauge> = Object.fromEntries(Object.entries(NodeMetric).map(([k, v]) => [v, k as NodeGauge]));

/** Attributes the collector consumes itself; every other record attribute becomes a `fields` entry. */
const CONSUMED = new Set<string>([Attr.logKind, Attr.teamId, Attr.sandboxId, Attr.templateId, Attr.buildId, Attr.buildStep]);

/** An AnyValue rendered as text: strings as they are, everything else as bounded JSON. */
export function anyValueText(v: unknown, depth = 0): string {
  if (v === null || typeof v !== 'object') return '';
  const o = v as Record<string, unknown>;
  if (typeof o.stringValue === 'string') return o.stringValue;
  if (typeof o.boolValue === 'boolean') return String(o.boolValue);
  if (typeof o.intValue === 'string' || typeof o.intValue === 'number') return String(o.intValue);
  if (typeof o.doubleValue === 'number' || typeof o.doubleValue === 'string') return String(o.doubleValue);
  if (typeof o.bytesValue === 'string') return o.bytesValue;
  if (depth >= 4) return '…';
  // Nested values are rendered only up to the message bound: nesting JSON in JSON doubles escapes per level, so
  // an unbounded rendering of a 4 MiB body could grow far past it before the cap applies.
  let budget = MAX_MESSAGE_BYTES;
  const arr = (o.arrayValue as { values?: unknown[] } | undefined)?.values;
  if (Array.isArray(arr)) {
    const out: string[] = [];
    for (const x of arr) {
      if (budget <= 0) break;
      const t = anyValueText(x, depth + 1);
      budget -= t.length;
      out.push(t);
    }
    return JSON.stringify(out);
  }
  const kv = (o.kvlistValue as { values?: unknown[] } | undefined)?.values;
  if (Array.isArray(kv)) {
    const out: Record<string, string> = {};
    for (const e of kv) {
      if (budget <= 0) break;
      if (!e || typeof e !== 'object' || typeof (e as { key?: unknown }).key !== 'string') continue;
      const key = (e as { key: string }).key.slice(0, 256);
      const t = anyValueText((e as { value?: unknown }).value, depth + 1);
      budget -= key.length + t.length;
      out[key] = t;
    }
    return JSON.stringify(out);
  }
  return '';
}

/** Cove's own attribute names: whoever sets one decides where a record is filed. */
const COVE_KEYS = new Set<string>(Object.values(Attr));

/**
 * Attributes as a map. OTLP's JSON is a list, so a key can appear twice: for one of Cove's keys that is refused
 * (undefined), since a sender that appended a tenant's fields after its own stamps would otherwise let the
 * tenant's `cove.team_id` win and file the record under another team.
 */
function attrMap(list: Array<{ key: string; value?: unknown }> | undefined): Map<string, string> | undefined {
  const m = new Map<string, string>();
  for (const kv of list ?? []) {
    const v = anyValueText(kv.value);
    if (COVE_KEYS.has(kv.key) && m.has(kv.key) && m.get(kv.key) !== v) return undefined;
    m.set(kv.key, v);
  }
  return m;
}

/** Cut `s` to at most `max` UTF-8 bytes (on a character boundary), saying how much was cut. */
export function capText(s: string, max: number): string {
  if (Buffer.byteLength(s, 'utf8') <= max) return s;
  const buf = Buffer.from(s, 'utf8');
  const marker = ` …[truncated ${buf.length - max} bytes]`;
  // Decoding a prefix may split a multi-byte character: the replacement char is dropped.
  return buf.subarray(0, max).toString('utf8').replace(/\uFFFD$/, '') + marker;
}

function nanosToMs(v: string | number | undefined): number | undefined {
  if (v === undefined) return undefined;
  try {
    const n = typeof v === 'number' ? BigInt(Math.trunc(v)) : BigInt(v);
    if (n <= 0n) return undefined;
    const ms = Number(n / 1_000_000n);
    return Number.isSafeInteger(ms) ? ms : undefined;
  } catch {
    return undefined;
  }
}

function recordTime(tsMs: number | undefined, nowMs: number): number {
  return tsMs === undefined || tsMs > nowMs + MAX_FUTURE_SKEW_MS ? nowMs : tsMs;
}

function levelOf(severityNumber: number | undefined, severityText: string | undefined): LogLevel {
  if (severityNumber) return levelOfSeverity(severityNumber);
  const t = severityText?.toLowerCase();
  if (t === 'debug' || t === 'trace') return 'debug';
  if (t === 'warn' || t === 'warning') return 'warn';
  if (t === 'error' || t === 'fatal') return 'error';
  return 'info';
}

const idOrNull = (v: string | undefined): string | null => (v !== undefined && ID.test(v) ? v : null);

export function decodeLogs(req: z.infer<typeof LogsRequest>, nowMs: number): Decoded<LogRow> {
  const out: Decoded<LogRow> = { rows: [], rejected: 0 };
  const reject = (why: string) => {
    out.rejected++;
    out.reason ??= why;
  };
  for (const rl of req.resourceLogs ?? []) {
    const res = attrMap(rl.resource?.attributes);
    for (const sl of rl.scopeLogs ?? []) {
      for (const rec of sl.logRecords ?? []) {
        const attrs = attrMap(rec.attributes);
        if (!res || !attrs) {
          reject('a Cove attribute (cove.*, service.*) appears twice with different values');
          continue;
        }
        // The record's own attribute wins over the resource's (one orchestrator speaks for many sandboxes).
        const get = (k: string) => attrs.get(k) ?? res.get(k);
        const kind = get(Attr.logKind);
        const teamId = idOrNull(get(Attr.teamId));
        if (kind !== 'sandbox' && kind !== 'build') {
          reject(`a log record needs ${Attr.logKind} = sandbox | build`);
          continue;
        }
        if (!teamId) {
          reject(`a ${kind} log record needs a valid ${Attr.teamId}`);
          continue;
        }
        const sandboxId = idOrNull(get(Attr.sandboxId));
        const templateId = idOrNull(get(Attr.templateId));
        const buildId = idOrNull(get(Attr.buildId));
        if (kind === 'sandbox' && !sandboxId) {
          reject(`a sandbox log record needs a valid ${Attr.sandboxId}`);
          continue;
        }
        if (kind === 'build' && (!templateId || !buildId)) {
          reject(`a build log record needs valid ${Attr.templateId} and ${Attr.buildId}`);
          continue;
        }
        const fields: Record<string, string> = {};
        let n = 0;
        let fieldBytes = 0;
        for (const [k, v] of attrs) {
          if (CONSUMED.has(k)) continue;
          const key = capText(k, 256);
          const value = capText(v, MAX_FIELD_BYTES);
          fieldBytes += Buffer.byteLength(key) + Buffer.byteLength(value);
          if (n++ >= MAX_FIELDS || fieldBytes > MAX_FIELDS_BYTES) break;
          fields[key] = value;
        }
        const step = get(Attr.buildStep);
        out.rows.push({
          kind,
          teamId,
          sandboxId: kind === 'sandbox' ? sandboxId : null,
          templateId,
          buildId: kind === 'build' ? buildId : null,
          step: kind === 'build' && step ? capText(step, 64) : null,
          tsMs: recordTime(nanosToMs(rec.timeUnixNano) ?? nanosToMs(rec.observedTimeUnixNano), nowMs),
          level: levelOf(rec.severityNumber, rec.severityText),
          message: capText(anyValueText(rec.body), MAX_MESSAGE_BYTES),
          fields,
        });
      }
    }
  }
  return out;
}

function pointValue(p: z.infer<typeof NumberDataPoint>): number | undefined {
  if (typeof p.asDouble === 'number') return Number.isFinite(p.asDouble) ? p.asDouble : undefined;
  if (p.asInt !== undefined) {
    const n = Number(p.asInt);
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

export interface DecodedMetrics {
  sandbox: SandboxPoint[];
  node: NodePoint[];
  rejected: number;
  reason?: string;
}

export function decodeMetrics(req: z.infer<typeof MetricsRequest>, nowMs: number): DecodedMetrics {
  const out: DecodedMetrics = { sandbox: [], node: [], rejected: 0 };
  const reject = (why: string) => {
    out.rejected++;
    out.reason ??= why;
  };
  for (const rm of req.resourceMetrics ?? []) {
    const res = attrMap(rm.resource?.attributes);
    if (!res) {
      const points = (rm.scopeMetrics ?? []).flatMap((sm) => sm.metrics ?? []).reduce((a, m) => a + (m.gauge?.dataPoints?.length ?? 0) + (m.sum?.dataPoints?.length ?? 0), 0);
      for (let i = 0; i < Math.max(points, 1); i++) reject('a Cove attribute (cove.*, service.*) appears twice with different values');
      continue;
    }
    const instance = res.get(Attr.serviceInstanceId);
    const source = instance ? `${res.get(Attr.serviceName) ?? ''}/${instance}` : undefined;
    for (const sm of rm.scopeMetrics ?? []) {
      for (const m of sm.metrics ?? []) {
        const sandboxGauge = SANDBOX_GAUGE[m.name];
        const nodeGauge = NODE_GAUGE[m.name];
        // Names outside Cove's vocabulary are accepted and not kept (a sender's SDK adds its own).
        if (!sandboxGauge && !nodeGauge) continue;
        for (const p of [...(m.gauge?.dataPoints ?? []), ...(m.sum?.dataPoints ?? [])]) {
          const value = pointValue(p);
          if (value === undefined || value < 0) {
            reject(`${m.name}: a data point needs a finite, non-negative asDouble or asInt`);
            continue;
          }
          const tsMs = recordTime(nanosToMs(p.timeUnixNano), nowMs);
          if (nodeGauge) {
            if (!source) {
              reject(`${m.name}: node metrics need the resource attribute ${Attr.serviceInstanceId}`);
              continue;
            }
            out.node.push({ source, gauge: nodeGauge, value, tsMs });
            continue;
          }
          const attrs = attrMap(p.attributes);
          if (!attrs) {
            reject(`${m.name}: a Cove attribute appears twice with different values`);
            continue;
          }
          const teamId = idOrNull(attrs.get(Attr.teamId) ?? res.get(Attr.teamId));
          const sandboxId = idOrNull(attrs.get(Attr.sandboxId) ?? res.get(Attr.sandboxId));
          if (!teamId || !sandboxId) {
            reject(`${m.name}: a sandbox data point needs valid ${Attr.teamId} and ${Attr.sandboxId}`);
            continue;
          }
          out.sandbox.push({ teamId, sandboxId, tsMs: Math.floor(tsMs / 1000) * 1000, gauge: sandboxGauge!, value });
        }
      }
    }
  }
  return out;
}
