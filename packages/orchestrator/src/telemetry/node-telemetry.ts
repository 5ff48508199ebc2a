// The node's telemetry (docs/observability.md): sandbox logs (envd's ring, pulled in rounds every 2 s while it
// has news — an idle ring is not pulled: the node holds a wait on it that envd answers when an entry comes —
// and the lifecycle the node itself knows), build logs, per-sandbox and node gauges — sent over OTLP/HTTP to the collector when
// COVE_COLLECTOR_URL is set — and Prometheus /metrics on the proxy port behind the node token.
// Every id on a record comes from the node's own records: envd cannot speak for another sandbox or team.

import { mkdirSync, readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import {
  Attr,
  NodeMetric,
  SandboxMetric,
  type LogLevel,
  type EnvdLogEntry,
  ENVD_LOG_LIMITS,
} from '@cove/contracts/telemetry';
import {
  Counter,
  Gauge,
  Histogram,
  OtlpSender,
  componentRegistry,
  requestMetrics,
  serveMetrics,
  type Registry,
  type RequestMetrics,
} from '@cove/telemetry';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { BuildIds } from '../build/build-manager.js';
import type { LogEntry as BuildLogEntry } from '../build/build-log.js';
import type { OrchestratorConfig } from '../config.js';
import type { HostStats } from '../node/host-stats.js';
import type { SandboxUsageSampler } from '../node/sandbox-usage.js';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { SandboxLifecycle, SandboxManager } from '../sandboxes/sandbox-manager.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import type { BootPermits } from '../sandboxes/boot-permits.js';
import type { WarmPool } from '../sandboxes/warm-pool.js';
import { EnvdLogsUnreadable, pullEnvdLogs, waitEnvdLogs } from './envd-logs.js';

const MiB = 1024 * 1024;
/** envd pulls at once; the rest wait for the next tick. */
const PULL_CONCURRENCY = 8;
/** After a failed pull, wait this many ticks (doubling) before the next, up to the cap. */
const MAX_BACKOFF_TICKS = 16;
/** envd's clock is the sandbox's: its timestamps are kept only within this window before the pull. */
const ENVD_CLOCK_WINDOW_MS = 10 * 60_000;

export interface NodeTelemetryDeps {
  config: OrchestratorConfig;
  runtime: SandboxRuntime;
  manager: SandboxManager;
  pool: WarmPool;
  usage: SandboxUsageSampler;
  host: HostStats;
  log: Logger;
  /** What the node gauges read from other parts (builds, paused slots); absent = 0. */
  counts?: NodeCounts;
  /** The node's boots at once and those waiting their turn (boot-permits.ts); absent, no boot gauges. */
  permits?: Pick<BootPermits, 'inUse' | 'size' | 'queued' | 'bootMs'>;
}

/** How long close() waits for the last export. */
const CLOSE_BOUND_MS = 3000;
/** Cursors of paused sandboxes kept for their resume (oldest forgotten first). */
const MAX_PAUSED_CURSORS = 10_000;
/** Create outcomes that are the caller's doing, not the node failing to start a sandbox. */
const CALLER_CODES = new Set([Code.Unauthenticated, Code.PermissionDenied, Code.InvalidArgument, Code.NotFound, Code.AlreadyExists, Code.Canceled]);
/** Where the pull cursors outlive a restart of the node (under the data dir, host-owned). */
export const CURSORS_FILE = 'telemetry/envd-log-cursors.json';
const CURSORS_FILE_MAX_BYTES = 4 * MiB;
const CursorsFile = z.object({ running: z.record(z.string(), z.unknown()), paused: z.record(z.string(), z.unknown()) });
/** One cursor of the file; a bad one is skipped alone (that sandbox's pull starts at 0), never the whole file. */
const CursorEntry = z.tuple([z.string().min(1).max(128), z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)]);

/** Figures of other parts of the node that its gauges report. */
export interface NodeCounts {
  buildsRunning: () => number;
  /** Paused sandboxes whose slot (memory) this node keeps for a resume in place. */
  sandboxesPaused: () => number;
  /** Pauses on this node's disk not yet in cluster storage, and the commit attempts storage refused so far. */
  snapshotCommits?: () => { pending: number; refused: number };
}

interface Cursor {
  after: number;
  /** Ticks to skip after failures. */
  skip: number;
  failures: number;
  lastFailure: string | undefined;
  /** Pulled in the next round: new, resumed, its envd said it has news, or the last reply was full. */
  due: boolean;
  /** The wait held on its envd while it has nothing new. */
  waiting: AbortController | undefined;
  /** Its envd has no wait route (a memory snapshot of an older envd): pulled every round, as before the wait. */
  legacy: boolean;
}

function newCursor(after: number): Cursor {
  return { after, skip: 0, failures: 0, lastFailure: undefined, due: true, waiting: undefined, legacy: false };
}

function sandboxIds(r: Pick<SandboxRecord, 'teamId' | 'sandboxId' | 'templateId' | 'buildId'>): Record<string, string> {
  return { [Attr.teamId]: r.teamId, [Attr.sandboxId]: r.sandboxId, [Attr.templateId]: r.templateId, [Attr.buildId]: r.buildId };
}

export class NodeTelemetry {
  readonly registry: Registry;
  readonly sender: OtlpSender | undefined;
  private readonly rpc: RequestMetrics;
  private readonly pauseSeconds: Histogram;
  private readonly resumeSeconds: Histogram;
  private readonly pullFailures: Counter;
  private readonly envdRequests: Counter;
  private readonly cursors = new Map<string, Cursor>();
  private readonly pausedCursors = new Map<string, number>();
  private readonly initTokens = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  /** Set by close(): no new wait is held. */
  private closing = false;
  private readonly log: Logger;
  /** Cumulative sums sent as NodeMetric `*.total` (the report carries their increase per interval). */
  private readonly totals = { buildsSucceeded: 0, buildsFailed: 0, sandboxCreateFailed: 0, resumeFailed: 0 };
  /** The cursors changed since they were last written. */
  private cursorsDirty = false;
  private savingCursors: Promise<void> = Promise.resolve();

  constructor(private readonly d: NodeTelemetryDeps) {
    this.log = d.log.child({ module: 'telemetry' });
    const t = d.config.telemetry;
    this.sender = t
      ? new OtlpSender({
          url: t.url,
          token: t.token,
          serviceName: 'cove-orchestrator',
          instanceId: d.config.nodeId,
          maxQueue: t.maxQueue,
          metricIntervalMs: t.metricIntervalMs,
        })
      : undefined;
    this.registry = componentRegistry('orchestrator', () => this.sender?.dropped());
    this.rpc = requestMetrics(this.registry, 'cove_rpc');
    const buckets = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120];
    this.pauseSeconds = new Histogram({ name: 'cove_sandbox_pause_duration_seconds', help: 'Pause calls that succeeded', buckets, registers: [this.registry] });
    this.resumeSeconds = new Histogram({ name: 'cove_sandbox_resume_duration_seconds', help: 'Creates from a snapshot (resumes) that succeeded', buckets, registers: [this.registry] });
    this.pullFailures = new Counter({ name: 'cove_envd_log_pull_failures_total', help: 'Reads of envd log rings that failed or were refused', labelNames: ['code'], registers: [this.registry] });
    this.envdRequests = new Counter({
      name: 'cove_envd_log_requests_total',
      help: 'Requests to envd log rings: pulls of entries, waits for news',
      labelNames: ['route'],
      registers: [this.registry],
    });
    const manager = d.manager;
    new Gauge({
      name: 'cove_sandboxes',
      help: 'Sandboxes on this node by state',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const running = manager.list().length;
        this.set({ state: 'running' }, running);
        this.set({ state: 'starting' }, Math.max(0, manager.allocation().count - running));
      },
    });
    const commits = d.counts?.snapshotCommits;
    if (commits) {
      // A pause answers before its commit; until the commit lands only this node holds the sandbox (docs/pause-resume.md).
      new Gauge({ name: 'cove_snapshot_commits_pending', help: 'Pauses on this node\'s disk not yet committed to cluster storage', registers: [this.registry], collect() { this.set(commits().pending); } });
      new Counter({
        name: 'cove_snapshot_commit_failures_total',
        help: 'Snapshot commit attempts cluster storage refused (each is retried until one succeeds)',
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(commits().refused);
        },
      });
    }
    const pool = d.pool;
    new Gauge({
      name: 'cove_warm_pool_slots',
      help: 'Warm slots ready, and the target, per template',
      labelNames: ['template', 'kind'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of pool.stats()) {
          this.set({ template: s.templateId, kind: 'ready' }, s.ready);
          this.set({ template: s.templateId, kind: 'target' }, s.target);
        }
      },
    });
    const permits = d.permits;
    if (permits) {
      // A wait that stays long says the node boots slower than it is asked to (docs/operating.md).
      const registers = [this.registry];
      new Gauge({ name: 'cove_boot_permits', help: 'Slot boots the node runs at once at most (COVE_BOOT_CONCURRENCY)', registers, collect() { this.set(permits.size); } });
      new Gauge({ name: 'cove_boots_running', help: 'Slot boots running now, each holding a permit', registers, collect() { this.set(permits.inUse); } });
      new Gauge({
        name: 'cove_boots_waiting',
        help: 'Slot boots waiting for a permit: Creates and restores (create), pool refills (refill)',
        labelNames: ['kind'],
        registers,
        collect() {
          const q = permits.queued;
          this.set({ kind: 'create' }, q.create);
          this.set({ kind: 'refill' }, q.refill);
        },
      });
      new Gauge({
        name: 'cove_boot_recent_seconds',
        help: 'How long a slot boot takes on this node now (moving average; 0 until a first boot ended); a Create whose expected wait for a boot passes COVE_BOOT_MAX_WAIT_MS is refused',
        registers,
        collect() {
          this.set((permits.bootMs ?? 0) / 1000);
        },
      });
    }
    if (this.sender) this.registerGauges(this.sender);
  }

  /** The sandbox's lifecycle as the node saw it, as sandbox log records. */
  readonly lifecycle: SandboxLifecycle = {
    created: (r, how) => {
      // A resume goes on from where the pull stopped at the pause: a memory resume brings back the same ring
      // (nothing is sent twice); a cold one starts a new envd, whose ring envd itself reads from its start.
      const after = this.pausedCursors.get(r.sandboxId);
      this.pausedCursors.delete(r.sandboxId);
      if (how.resumed && after !== undefined) this.cursors.set(r.sandboxId, newCursor(after));
      this.cursorsDirty ||= after !== undefined;
      this.sandboxLog(r, 'info', how.resumed ? 'sandbox resumed' : 'sandbox created', {
        vcpu: r.vcpu,
        memoryMb: r.memoryMb,
        diskMb: r.diskMb,
        warmPoolHit: how.warmPoolHit,
        endTime: new Date(r.endTime).toISOString(),
      });
    },
    deleted: (r, reason) => {
      this.sandboxLog(r, 'info', reason === 'timeout' ? 'sandbox timed out' : 'sandbox killed', { reason });
      this.cursors.get(r.sandboxId)?.waiting?.abort();
      this.cursors.delete(r.sandboxId);
      this.cursorsDirty = true;
    },
    paused: (r) => {
      this.sandboxLog(r, 'info', 'sandbox paused', {});
      const c = this.cursors.get(r.sandboxId);
      c?.waiting?.abort();
      this.cursors.delete(r.sandboxId);
      if (c) {
        this.pausedCursors.set(r.sandboxId, c.after);
        if (this.pausedCursors.size > MAX_PAUSED_CURSORS) this.pausedCursors.delete(this.pausedCursors.keys().next().value!);
        this.cursorsDirty = true;
      }
    },
  };

  /** A build this node ran ended (`ready` or `error`): counted in the node's build totals. */
  buildFinished(outcome: 'ready' | 'error'): void {
    if (outcome === 'ready') this.totals.buildsSucceeded++;
    else this.totals.buildsFailed++;
  }

  /** A build log entry, as a `cove.log.kind=build` record. */
  buildLog(ids: BuildIds, e: BuildLogEntry): void {
    this.sender?.emit({
      kind: 'build',
      level: e.level,
      message: e.message,
      ids: { [Attr.teamId]: ids.teamId, [Attr.templateId]: ids.templateId, [Attr.buildId]: ids.buildId, [Attr.buildStep]: e.step },
      time: e.timestamp,
    });
  }

  /** RPC request counts and latencies by method and code; pause and resume durations. */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      const t0 = performance.now();
      const method = req.method.name;
      const resume = method === 'Create' && Boolean((req.message as { sandbox?: { snapshotId?: string } }).sandbox?.snapshotId);
      try {
        const res = await next(req);
        const s = (performance.now() - t0) / 1000;
        this.rpc.observe(method, 'ok', s);
        if (method === 'Pause') this.pauseSeconds.observe(s);
        if (resume) this.resumeSeconds.observe(s);
        return res;
      } catch (err) {
        const code = ConnectError.from(err).code;
        this.rpc.observe(method, Code[code] ?? 'unknown', (performance.now() - t0) / 1000);
        // A refused caller (auth, bad request, unknown template or snapshot, duplicate id) is not a failed start.
        if (method === 'Create' && !CALLER_CODES.has(code)) {
          if (resume) this.totals.resumeFailed++;
          else this.totals.sandboxCreateFailed++;
        }
        throw err;
      }
    };
  }

  /**
   * `GET /metrics` with `Authorization: Bearer <node token>` on the proxy port. Only requests that name no
   * sandbox are taken: a sandbox's own /metrics (E2b-Sandbox-Id header) still goes to the sandbox.
   */
  attachMetricsRoute(server: HttpServer): void {
    const proxyListeners = server.listeners('request') as ((req: IncomingMessage, res: ServerResponse) => void)[];
    server.removeAllListeners('request');
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      if (req.headers['e2b-sandbox-id'] === undefined && serveMetrics(this.registry, this.d.config.nodeToken, req, res)) return;
      for (const l of proxyListeners) l.call(server, req, res);
    });
  }

  start(): void {
    if (!this.sender || this.timer) return;
    this.loadCursors();
    this.timer = setInterval(() => {
      this.ticking ??= this.tick()
        .then(() => this.saveCursors())
        .finally(() => (this.ticking = undefined));
    }, this.d.config.telemetry!.logPullMs);
    this.timer.unref();
  }

  private cursorsPath(): string {
    return join(this.d.config.dataDir, CURSORS_FILE);
  }

  /**
   * The cursors the node's last run left (after recovery re-adopted its sandboxes): a restart goes on where the
   * pull stopped, so nothing envd recorded is sent twice. A missing or unusable file starts from 0 (what the
   * collector then gets twice is bounded by one ring).
   */
  private loadCursors(): void {
    let text: string;
    try {
      text = readFileSync(this.cursorsPath(), 'utf8');
    } catch {
      return;
    }
    const parsed = text.length <= CURSORS_FILE_MAX_BYTES ? CursorsFile.safeParse(parseJsonOrUndefined(text)) : undefined;
    if (!parsed?.success) {
      this.log.warn({ file: this.cursorsPath() }, 'envd log cursors unreadable; pulls start from the beginning');
      return;
    }
    const live = new Set(this.d.manager.list().map((r) => r.sandboxId));
    const entries = (m: Record<string, unknown>) =>
      Object.entries(m).flatMap((e) => {
        const ok = CursorEntry.safeParse(e);
        return ok.success ? [ok.data] : [];
      });
    for (const [id, after] of entries(parsed.data.running)) {
      if (live.has(id)) this.cursors.set(id, newCursor(after));
    }
    for (const [id, after] of entries(parsed.data.paused).slice(-MAX_PAUSED_CURSORS)) this.pausedCursors.set(id, after);
  }

  /** Writes the cursors when they changed (tmp file + rename: a crash leaves the old file or the new). */
  private saveCursors(): Promise<void> {
    if (!this.cursorsDirty) return this.savingCursors;
    this.cursorsDirty = false;
    const body = JSON.stringify({
      running: Object.fromEntries([...this.cursors].map(([id, c]) => [id, c.after])),
      paused: Object.fromEntries(this.pausedCursors),
    });
    const file = this.cursorsPath();
    this.savingCursors = this.savingCursors.then(async () => {
      try {
        mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
        await writeFile(`${file}.tmp`, body, { mode: 0o600 });
        await rename(`${file}.tmp`, file);
      } catch (err) {
        this.cursorsDirty = true;
        this.log.warn({ err }, 'writing envd log cursors failed');
      }
    });
    return this.savingCursors;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    this.closing = true;
    await this.ticking;
    for (const c of this.cursors.values()) c.waiting?.abort();
    if (this.sender) await this.saveCursors();
    // A collector that is down must not hold a stopping node: what is not out within the bound is lost.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.sender?.shutdown(), new Promise((r) => (timer = setTimeout(r, CLOSE_BOUND_MS)))]);
    clearTimeout(timer);
  }

  /** One round of envd log pulls (tests call it directly to wait on a round). */
  async tick(): Promise<void> {
    const records = this.d.manager.list();
    const live = new Set(records.map((r) => r.sandboxId));
    const liveSlots = new Set(records.map((r) => r.slotId));
    for (const slotId of this.initTokens.keys()) if (!liveSlots.has(slotId)) this.initTokens.delete(slotId);
    for (const id of this.cursors.keys()) {
      // A pause or snapshot takes its sandbox off the list before the pause is told (or the sandbox is put back):
      // its cursor stays, or the resume (or the snapshot's source, put back) would pull its ring from the start.
      if (live.has(id) || this.d.manager.isDetached(id)) continue;
      this.cursors.get(id)?.waiting?.abort();
      this.cursors.delete(id);
      this.cursorsDirty = true;
    }
    const due = records.filter((r) => {
      const c = this.cursors.get(r.sandboxId);
      if (c && c.skip > 0) {
        c.skip--;
        return false;
      }
      return !c || c.due || c.legacy;
    });
    for (let i = 0; i < due.length; i += PULL_CONCURRENCY) {
      await Promise.all(due.slice(i, i + PULL_CONCURRENCY).map((r) => this.pull(r)));
    }
    // Every other ring is waited on, not pulled: an idle sandbox costs one held request per wait, not one per round.
    if (this.closing) return;
    for (const r of records) {
      const c = this.cursors.get(r.sandboxId);
      if (c && !c.due && !c.legacy && c.skip === 0 && !c.waiting) this.wait(r, c);
    }
  }

  /** Holds a wait on the sandbox's envd; its answer marks the ring due for the next round (rounds stay bounded). */
  private wait(r: SandboxRecord, c: Cursor): void {
    const abort = new AbortController();
    c.waiting = abort;
    void (async () => {
      try {
        const token = await this.initTokenOf(r.slotId).catch(() => undefined);
        if (!token || abort.signal.aborted) return;
        this.envdRequests.inc({ route: 'wait' });
        const reply = await waitEnvdLogs(r.address, token, c.after, this.d.config.telemetry!.logWaitMs, abort.signal);
        // A cursor moved meanwhile (a carry-over) only makes one pull more, never one less.
        if (reply.last !== c.after) c.due = true;
      } catch (err) {
        if (abort.signal.aborted) return;
        // A snapshot holds the sandbox (and its envd) while the wait runs: not envd's failure; pulled once it is back.
        if (this.d.manager.isDetached(r.sandboxId)) c.due = true;
        else if (err instanceof EnvdLogsUnreadable && err.code === 'envd_refused' && err.status === 404) c.legacy = true;
        else this.failed(r, c, err);
      } finally {
        if (c.waiting === abort) c.waiting = undefined;
      }
    })();
  }

  /** The slot's init token: its own record read once (never every slot's: a new sandbox must not cost O(slots)). */
  private async initTokenOf(slotId: string): Promise<string | undefined> {
    let token = this.initTokens.get(slotId);
    if (token === undefined) {
      token = (await this.d.runtime.record(slotId))?.initToken;
      if (token !== undefined) this.initTokens.set(slotId, token);
    }
    return token;
  }

  private async pull(r: SandboxRecord): Promise<void> {
    let c = this.cursors.get(r.sandboxId);
    if (!c) {
      // A new sandbox's logs begin at its /init: what its slot's envd recorded before was the pool's preparation.
      c = newCursor(r.logsAfter ?? 0);
      this.cursors.set(r.sandboxId, c);
    }
    const token = await this.initTokenOf(r.slotId).catch(() => undefined);
    if (!token) return;
    const pulledAt = Date.now();
    try {
      this.envdRequests.inc({ route: 'pull' });
      const reply = await pullEnvdLogs(r.address, token, c.after);
      // The sandbox may have gone while the read ran; its ids are still the node's own.
      if (reply.dropped > 0) this.sandboxLog(r, 'warn', 'envd log entries were overwritten before they were read', { dropped: reply.dropped });
      for (const e of reply.entries) this.envdEntry(r, e, pulledAt);
      this.cursorsDirty ||= c.after !== reply.next;
      c.after = reply.next;
      this.carryOver(r.sandboxId, c, reply.next);
      c.failures = 0;
      c.lastFailure = undefined;
      // A full reply may have left entries behind: pulled again next round; else waited on from the new cursor
      // (envd answers that wait at once if an entry came in meanwhile).
      c.due = reply.entries.length >= ENVD_LOG_LIMITS.maxEntries;
    } catch (err) {
      this.failed(r, c, err);
    }
  }

  /** A pull or wait failed: backed off (doubling ticks), counted, said once per kind in the sandbox's log. */
  private failed(r: SandboxRecord, c: Cursor, err: unknown): void {
    const code = err instanceof EnvdLogsUnreadable ? err.code : 'envd_unreachable';
    this.pullFailures.inc({ code });
    c.failures++;
    c.skip = Math.min(MAX_BACKOFF_TICKS, 2 ** Math.min(c.failures - 1, 4));
    // After a failure the next try is a pull: what the ring holds is read as soon as envd answers again.
    c.due = true;
    // Said once per kind of failure, in the sandbox's own log: the tenant's envd gave an unusable answer.
    if (code !== c.lastFailure && code !== 'envd_unreachable') {
      this.sandboxLog(r, 'warn', 'the sandbox\'s envd logs could not be read', { code });
    }
    c.lastFailure = code;
    this.log.debug({ err, sandboxId: r.sandboxId, code }, 'envd log read failed');
  }

  /**
   * A read that ran while its sandbox was paused (and perhaps already resumed) ends on a cursor that no longer
   * stands for the sandbox: its end goes to the one that does — the paused cursor, or the resumed sandbox's, which
   * has not pulled yet (rounds do not overlap) — or a memory resume would send these entries again.
   */
  private carryOver(sandboxId: string, read: Cursor, next: number): void {
    const now = this.cursors.get(sandboxId);
    if (now === read) return;
    const paused = this.pausedCursors.get(sandboxId);
    if (paused !== undefined) this.pausedCursors.set(sandboxId, Math.max(paused, next));
    else if (now) now.after = Math.max(now.after, next);
    this.cursorsDirty = true;
  }

  private envdEntry(r: SandboxRecord, e: EnvdLogEntry, pulledAt: number): void {
    const ts = Date.parse(e.ts);
    const time = Number.isFinite(ts) && ts <= pulledAt && ts >= pulledAt - ENVD_CLOCK_WINDOW_MS ? ts : pulledAt;
    this.sender?.emit({ kind: 'sandbox', level: e.level, message: e.message, ids: sandboxIds(r), fields: e.fields, time });
  }

  private sandboxLog(r: SandboxRecord, level: LogLevel, message: string, fields: Record<string, string | number | boolean>): void {
    this.sender?.emit({ kind: 'sandbox', level, message, ids: sandboxIds(r), fields: { ...fields, source: 'node' } });
  }

  private registerGauges(sender: OtlpSender): void {
    const { meter } = sender;
    const { manager, usage, host } = this.d;
    const g = (name: string, unit?: string) => meter.createObservableGauge(name, unit ? { unit } : {});
    const cpuUsed = g(SandboxMetric.cpuUsedPct, '%');
    const cpuCount = g(SandboxMetric.cpuCount);
    const memUsed = g(SandboxMetric.memoryUsed, 'By');
    const memTotal = g(SandboxMetric.memoryTotal, 'By');
    const diskUsed = g(SandboxMetric.diskUsed, 'By');
    const diskTotal = g(SandboxMetric.diskTotal, 'By');
    meter.addBatchObservableCallback(
      (o) => {
        const records = new Map(manager.list().map((r) => [r.sandboxId, r]));
        for (const s of usage.samples()) {
          const r = records.get(s.sandboxId);
          if (!r) continue;
          const a = { [Attr.teamId]: r.teamId, [Attr.sandboxId]: r.sandboxId };
          o.observe(cpuUsed, s.cpuPercent, a);
          o.observe(cpuCount, r.vcpu, a);
          o.observe(memUsed, s.memoryUsedBytes, a);
          o.observe(memTotal, r.memoryMb * MiB, a);
          o.observe(diskUsed, s.diskUsedBytes, a);
          o.observe(diskTotal, r.diskMb * MiB, a);
        }
      },
      [cpuUsed, cpuCount, memUsed, memTotal, diskUsed, diskTotal],
    );
    const nCpu = g(NodeMetric.cpuCount);
    const nCpuUsed = g(NodeMetric.cpuUsedPct, '%');
    const nMem = g(NodeMetric.memoryTotal, 'By');
    const nMemUsed = g(NodeMetric.memoryUsed, 'By');
    const nDisk = g(NodeMetric.diskTotal, 'By');
    const nDiskUsed = g(NodeMetric.diskUsed, 'By');
    const nRunning = g(NodeMetric.sandboxesRunning);
    const nStarting = g(NodeMetric.sandboxesStarting);
    const nPaused = g(NodeMetric.sandboxesPaused);
    const nBuilds = g(NodeMetric.buildsRunning);
    // Cumulative sums since this process started (a restart resets them; the collector counts that as new). The
    // sender adds its own `cove.telemetry.dropped.total`.
    const c = (name: string) => meter.createObservableCounter(name);
    const tBuildsOk = c(NodeMetric.buildsSucceededTotal);
    const tBuildsFailed = c(NodeMetric.buildsFailedTotal);
    const tCreateFailed = c(NodeMetric.sandboxCreateFailedTotal);
    const tResumeFailed = c(NodeMetric.resumeFailedTotal);
    const counts = this.d.counts;
    const totals = this.totals;
    meter.addBatchObservableCallback(
      async (o) => {
        const [cpu, memUsedBytes, disk] = await Promise.all([
          host.cpuPercent().catch(() => 0),
          host.memoryUsedBytes().catch(() => 0),
          host.disk().catch(() => ({ totalBytes: 0, usedBytes: 0 })),
        ]);
        o.observe(nCpu, host.cpuCount);
        o.observe(nCpuUsed, cpu);
        o.observe(nMem, host.memoryBytes);
        o.observe(nMemUsed, memUsedBytes);
        o.observe(nDisk, disk.totalBytes);
        o.observe(nDiskUsed, disk.usedBytes);
        const running = manager.list().length;
        o.observe(nRunning, running);
        o.observe(nStarting, Math.max(0, manager.allocation().count - running));
        o.observe(nPaused, counts?.sandboxesPaused() ?? 0);
        o.observe(nBuilds, counts?.buildsRunning() ?? 0);
        o.observe(tBuildsOk, totals.buildsSucceeded);
        o.observe(tBuildsFailed, totals.buildsFailed);
        o.observe(tCreateFailed, totals.sandboxCreateFailed);
        o.observe(tResumeFailed, totals.resumeFailed);
      },
      [nCpu, nCpuUsed, nMem, nMemUsed, nDisk, nDiskUsed, nRunning, nStarting, nPaused, nBuilds, tBuildsOk, tBuildsFailed, tCreateFailed, tResumeFailed],
    );
  }
}

function parseJsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
