// The collector's embedded store: one SQLite file (WAL) in the data dir. Log entries and sandbox metric samples
// are bounded in bytes (each row is accounted its payload plus a fixed overhead, oldest dropped first) and in age.
// Node gauges for the anonymized report live in a small table so node indexes survive a restart.

import SqliteDatabase from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { LogLevel } from '@cove/contracts/telemetry';
import type { LogRow, NodeGauge, NodePoint, SandboxGauge, SandboxPoint } from './otlp.js';

export const LEVELS: LogLevel[] = ['debug', 'info', 'warn', 'error'];
const LEVEL_RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
/** Fixed per-row cost (row header, integer columns, index entries) on top of the text a row holds. */
const LOG_ROW_OVERHEAD = 96;
const METRIC_ROW_OVERHEAD = 120;
/**
 * A log answer stops adding entries past this many bytes of messages and fields (the caller pages on by time):
 * 1000 entries of 16 KiB messages must not become one 40 MiB response.
 */
export const MAX_ANSWER_BYTES = 8 * 1024 * 1024;
/** Retention trims to this share of the bound, so a full store is not trimmed on every single insert. */
const TRIM_TO = 0.9;

export type Direction = 'forward' | 'backward';

export interface StoredLog {
  tsMs: number;
  level: LogLevel;
  message: string;
  step: string | null;
  fields: Record<string, string>;
}
export interface StoredSample {
  tsMs: number;
  cpuUsedPct: number | null;
  cpuCount: number | null;
  memUsed: number | null;
  memTotal: number | null;
  diskUsed: number | null;
  diskTotal: number | null;
}
export interface NodeState {
  source: string;
  index: number;
  lastSeenMs: number;
  gauges: Partial<Record<NodeGauge, number>>;
}

export interface StoreLimits {
  logBytes: number;
  metricBytes: number;
  retentionMs: number;
}

export interface DropCounts {
  logs: number;
  metrics: number;
}

const GAUGE_COLUMN: Record<SandboxGauge, string> = {
  cpuUsedPct: 'cpu_used_pct',
  cpuCount: 'cpu_count',
  memUsed: 'mem_used',
  memTotal: 'mem_total',
  diskUsed: 'disk_used',
  diskTotal: 'disk_total',
};

export class Store {
  readonly db: SqliteDatabase.Database;
  private logBytes: number;
  private metricBytes: number;
  private readonly nodes = new Map<string, NodeState>();
  private readonly stmt;

  constructor(
    dataDir: string,
    private readonly limits: StoreLimits,
  ) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    this.db = new SqliteDatabase(join(dataDir, 'collector.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS log_entries (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('sandbox', 'build')),
        team_id TEXT NOT NULL,
        sandbox_id TEXT,
        template_id TEXT,
        build_id TEXT,
        step TEXT,
        ts INTEGER NOT NULL,
        level INTEGER NOT NULL,
        message TEXT NOT NULL,
        fields TEXT NOT NULL,
        bytes INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS log_entries_sandbox ON log_entries (team_id, sandbox_id, ts) WHERE kind = 'sandbox';
      CREATE INDEX IF NOT EXISTS log_entries_build ON log_entries (team_id, build_id, ts) WHERE kind = 'build';
      CREATE INDEX IF NOT EXISTS log_entries_ts ON log_entries (ts);
      CREATE TABLE IF NOT EXISTS metric_samples (
        id INTEGER PRIMARY KEY,
        team_id TEXT NOT NULL,
        sandbox_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        cpu_used_pct REAL, cpu_count REAL, mem_used REAL, mem_total REAL, disk_used REAL, disk_total REAL,
        bytes INTEGER NOT NULL,
        UNIQUE (team_id, sandbox_id, ts)
      );
      CREATE INDEX IF NOT EXISTS metric_samples_ts ON metric_samples (ts);
      CREATE TABLE IF NOT EXISTS nodes (
        source TEXT PRIMARY KEY,
        idx INTEGER NOT NULL UNIQUE,
        last_seen INTEGER NOT NULL,
        gauges TEXT NOT NULL
      );
    `);
    this.stmt = {
      insertLog: this.db.prepare(
        `INSERT INTO log_entries (kind, team_id, sandbox_id, template_id, build_id, step, ts, level, message, fields, bytes)
         VALUES (@kind, @teamId, @sandboxId, @templateId, @buildId, @step, @tsMs, @level, @message, @fields, @bytes)`,
      ),
      insertSample: this.db.prepare(`INSERT OR IGNORE INTO metric_samples (team_id, sandbox_id, ts, bytes) VALUES (?, ?, ?, ?)`),
      updateSample: Object.fromEntries(
        Object.entries(GAUGE_COLUMN).map(([g, col]) => [g, this.db.prepare(`UPDATE metric_samples SET ${col} = ? WHERE team_id = ? AND sandbox_id = ? AND ts = ?`)]),
      ) as Record<SandboxGauge, SqliteDatabase.Statement>,
      upsertNode: this.db.prepare(
        `INSERT INTO nodes (source, idx, last_seen, gauges) VALUES (@source, @index, @lastSeenMs, @gauges)
         ON CONFLICT (source) DO UPDATE SET last_seen = excluded.last_seen, gauges = excluded.gauges`,
      ),
    };
    this.logBytes = (this.db.prepare('SELECT COALESCE(SUM(bytes), 0) AS b FROM log_entries').get() as { b: number }).b;
    this.metricBytes = (this.db.prepare('SELECT COALESCE(SUM(bytes), 0) AS b FROM metric_samples').get() as { b: number }).b;
    for (const r of this.db.prepare('SELECT source, idx, last_seen, gauges FROM nodes').all() as Array<{ source: string; idx: number; last_seen: number; gauges: string }>) {
      this.nodes.set(r.source, { source: r.source, index: r.idx, lastSeenMs: r.last_seen, gauges: JSON.parse(r.gauges) as NodeState['gauges'] });
    }
  }

  get bytes(): { logs: number; metrics: number } {
    return { logs: this.logBytes, metrics: this.metricBytes };
  }

  /** Stores log rows in one transaction, then applies the byte bound. Returns rows dropped by retention. */
  addLogs(rows: LogRow[]): number {
    if (rows.length === 0) return 0;
    return this.db.transaction(() => {
      for (const r of rows) {
        const fields = JSON.stringify(r.fields);
        const bytes =
          LOG_ROW_OVERHEAD +
          Buffer.byteLength(r.message, 'utf8') +
          Buffer.byteLength(fields, 'utf8') +
          r.teamId.length +
          (r.sandboxId?.length ?? 0) +
          (r.templateId?.length ?? 0) +
          (r.buildId?.length ?? 0) +
          (r.step?.length ?? 0);
        this.stmt.insertLog.run({ ...r, level: LEVEL_RANK[r.level], fields, bytes });
        this.logBytes += bytes;
      }
      return this.trim('log_entries', 'logBytes', this.limits.logBytes);
    })();
  }

  /** Merges gauge points into samples keyed (team, sandbox, second), then applies the byte bound. */
  addSandboxPoints(points: SandboxPoint[]): number {
    if (points.length === 0) return 0;
    return this.db.transaction(() => {
      for (const p of points) {
        const bytes = METRIC_ROW_OVERHEAD + 2 * (p.teamId.length + p.sandboxId.length);
        if (this.stmt.insertSample.run(p.teamId, p.sandboxId, p.tsMs, bytes).changes === 1) this.metricBytes += bytes;
        this.stmt.updateSample[p.gauge].run(p.value, p.teamId, p.sandboxId, p.tsMs);
      }
      return this.trim('metric_samples', 'metricBytes', this.limits.metricBytes);
    })();
  }

  /** Latest node gauges per sender; a new sender gets the next opaque index. */
  addNodePoints(points: NodePoint[]): void {
    if (points.length === 0) return;
    const touched = new Set<NodeState>();
    for (const p of points) {
      let n = this.nodes.get(p.source);
      if (!n) {
        n = { source: p.source, index: this.nodes.size, lastSeenMs: 0, gauges: {} };
        this.nodes.set(p.source, n);
      }
      n.gauges[p.gauge] = p.value;
      n.lastSeenMs = Math.max(n.lastSeenMs, p.tsMs);
      touched.add(n);
    }
    this.db.transaction(() => {
      for (const n of touched) this.stmt.upsertNode.run({ source: n.source, index: n.index, lastSeenMs: n.lastSeenMs, gauges: JSON.stringify(n.gauges) });
    })();
  }

  nodeStates(): NodeState[] {
    return [...this.nodes.values()].sort((a, b) => a.index - b.index);
  }

  /**
   * Drops the oldest rows (by timestamp, then arrival) of `table` until its bytes are at TRIM_TO of `limit`.
   * Returns the number of rows dropped.
   */
  private trim(table: 'log_entries' | 'metric_samples', counter: 'logBytes' | 'metricBytes', limit: number): number {
    if (this[counter] <= limit) return 0;
    const target = this[counter] - Math.floor(limit * TRIM_TO);
    let freed = 0;
    let rows = 0;
    let cut: { id: number; ts: number } | undefined;
    for (const r of this.db.prepare(`SELECT id, ts, bytes FROM ${table} ORDER BY ts, id`).iterate() as IterableIterator<{ id: number; ts: number; bytes: number }>) {
      freed += r.bytes;
      rows++;
      cut = r;
      if (freed >= target) break;
    }
    if (!cut) return 0;
    this.db.prepare(`DELETE FROM ${table} WHERE ts < ? OR (ts = ? AND id <= ?)`).run(cut.ts, cut.ts, cut.id);
    this[counter] -= freed;
    return rows;
  }

  /** Drops rows older than the age bound (and nodes silent for as long). */
  expire(nowMs: number): DropCounts {
    const before = nowMs - this.limits.retentionMs;
    return this.db.transaction(() => {
      const out: DropCounts = { logs: 0, metrics: 0 };
      for (const [table, counter, key] of [
        ['log_entries', 'logBytes', 'logs'],
        ['metric_samples', 'metricBytes', 'metrics'],
      ] as const) {
        const r = this.db.prepare(`SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM ${table} WHERE ts < ?`).get(before) as { n: number; b: number };
        if (r.n === 0) continue;
        this.db.prepare(`DELETE FROM ${table} WHERE ts < ?`).run(before);
        this[counter] -= r.b;
        out[key] = r.n;
      }
      return out;
    })();
  }

  sandboxLogs(q: { teamId: string; sandboxId: string; startMs: number; endMs: number; limit: number; direction: Direction; minLevel: LogLevel; search?: string }): StoredLog[] {
    const order = q.direction === 'forward' ? 'ASC' : 'DESC';
    const search = q.search ? 'AND instr(message, @search) > 0' : '';
    const rows = this.db
      .prepare(
        `SELECT ts, level, message, step, fields FROM log_entries
         WHERE kind = 'sandbox' AND team_id = @teamId AND sandbox_id = @sandboxId AND ts >= @startMs AND ts <= @endMs
           AND level >= @minLevel ${search}
         ORDER BY ts ${order}, id ${order} LIMIT @limit`,
      )
      .iterate({ ...q, search: q.search ?? null, minLevel: LEVEL_RANK[q.minLevel] });
    return bounded(rows);
  }

  buildLogs(q: { teamId: string; templateId: string; buildId: string; startMs: number; endMs: number; offset: number; limit: number; direction: Direction; minLevel: LogLevel }): StoredLog[] {
    const order = q.direction === 'forward' ? 'ASC' : 'DESC';
    const rows = this.db
      .prepare(
        `SELECT ts, level, message, step, fields FROM log_entries
         WHERE kind = 'build' AND team_id = @teamId AND build_id = @buildId AND template_id = @templateId
           AND ts >= @startMs AND ts <= @endMs AND level >= @minLevel
         ORDER BY ts ${order}, id ${order} LIMIT @limit OFFSET @offset`,
      )
      .iterate({ ...q, minLevel: LEVEL_RANK[q.minLevel] });
    return bounded(rows);
  }

  sandboxMetrics(q: { teamId: string; sandboxId: string; startMs: number; endMs: number; limit: number }): StoredSample[] {
    return (
      this.db
        .prepare(
          `SELECT * FROM metric_samples WHERE team_id = @teamId AND sandbox_id = @sandboxId AND ts >= @startMs AND ts <= @endMs
           ORDER BY ts ASC LIMIT @limit`,
        )
        .all(q) as SampleRow[]
    ).map(toSample);
  }

  latestMetrics(teamId: string, sandboxIds: string[]): Map<string, StoredSample> {
    const stmt = this.db.prepare(`SELECT * FROM metric_samples WHERE team_id = ? AND sandbox_id = ? ORDER BY ts DESC LIMIT 1`);
    const out = new Map<string, StoredSample>();
    for (const id of sandboxIds) {
      const r = stmt.get(teamId, id) as SampleRow | undefined;
      if (r) out.set(id, toSample(r));
    }
    return out;
  }

  close(): void {
    this.db.close();
  }
}

interface SampleRow {
  ts: number;
  cpu_used_pct: number | null;
  cpu_count: number | null;
  mem_used: number | null;
  mem_total: number | null;
  disk_used: number | null;
  disk_total: number | null;
}

function toSample(r: SampleRow): StoredSample {
  return { tsMs: r.ts, cpuUsedPct: r.cpu_used_pct, cpuCount: r.cpu_count, memUsed: r.mem_used, memTotal: r.mem_total, diskUsed: r.disk_used, diskTotal: r.disk_total };
}

/** Rows as entries, up to MAX_ANSWER_BYTES (at least one, so a caller paging by time always moves on). */
function bounded(rows: IterableIterator<unknown>): StoredLog[] {
  const out: StoredLog[] = [];
  let bytes = 0;
  for (const r of rows) {
    const x = r as { message: string; fields: string };
    bytes += x.message.length + x.fields.length;
    if (bytes > MAX_ANSWER_BYTES && out.length > 0) break;
    out.push(toLog(r));
  }
  return out;
}

function toLog(r: unknown): StoredLog {
  const x = r as { ts: number; level: number; message: string; step: string | null; fields: string };
  return { tsMs: x.ts, level: LEVELS[x.level] ?? 'info', message: x.message, step: x.step, fields: JSON.parse(x.fields) as Record<string, string> };
}
