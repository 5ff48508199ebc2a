// The anonymized cluster report (docs/observability.md, "Anonymized metrics out"): built only from aggregates
// (node gauges under an opaque index, summed counts) and checked against the strict schema before it leaves,
// so a bug here cannot leak an id, a name or a log line: a body the schema refuses is never sent.

import { ClusterMetricsReport } from '@cove/contracts/telemetry';
import type { Logger } from 'pino';
import { request } from 'undici';
import type { NodeGauge } from './otlp.js';
import type { CollectorMetrics } from './prom.js';
import type { NodeState, Store } from './store.js';

/** A node whose gauges are older than this is reported unhealthy (and still listed, so "node missing" alerts). */
export const NODE_STALE_MS = 60_000;
const SEND_TIMEOUT_MS = 10_000;

/** Cumulative sums the report carries as increases per interval. */
const TOTALS = ['buildsSucceededTotal', 'buildsFailedTotal', 'sandboxCreateFailedTotal', 'resumeFailedTotal', 'telemetryDroppedTotal'] as const satisfies readonly NodeGauge[];
type Total = (typeof TOTALS)[number];
/** Gauges that make a sender a node of the report (an edge sends only totals). */
const NODE_GAUGES = ['cpuCount', 'cpuUsedPct', 'memoryTotal', 'memoryUsed', 'diskTotal', 'diskUsed'] as const satisfies readonly NodeGauge[];

const clampInt = (v: number | undefined, max: number) => Math.min(max, Math.max(0, Math.round(v ?? 0)));
const COUNT_MAX = 1e9;
const BYTES_MAX = 2 ** 53;

export interface ReportOptions {
  controlPlaneUrl: string;
  clusterToken: string;
  intervalMs: number;
}

export class Reporter {
  /** Totals as of the last report the control plane accepted, per sender. */
  private reported = new Map<string, Partial<Record<Total, number>>>();
  private reportedRejected: number;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly rejectedTotal: () => number,
    private readonly opts: ReportOptions,
    private readonly log: Logger,
    private readonly metrics: CollectorMetrics,
  ) {
    // What senders counted before this collector (re)started is not this interval's.
    for (const n of store.nodeStates()) this.reported.set(n.source, pickTotals(n));
    this.reportedRejected = rejectedTotal();
  }

  /** The report as of `nowMs`, plus what to remember once the control plane has it. */
  build(nowMs: number): { report: ClusterMetricsReport; commit: () => void } {
    const states = this.store.nodeStates();
    const healthy = (n: NodeState) => n.lastSeenMs >= nowMs - Math.max(NODE_STALE_MS, 3 * this.opts.intervalMs);
    const sum = (g: NodeGauge) => states.filter(healthy).reduce((a, n) => a + (n.gauges[g] ?? 0), 0);
    const now = new Map<string, Partial<Record<Total, number>>>();
    const delta: Record<Total, number> = { buildsSucceededTotal: 0, buildsFailedTotal: 0, sandboxCreateFailedTotal: 0, resumeFailedTotal: 0, telemetryDroppedTotal: 0 };
    for (const n of states) {
      const cur = pickTotals(n);
      const before = this.reported.get(n.source) ?? {};
      for (const t of TOTALS) {
        const c = cur[t];
        if (c === undefined) continue;
        const b = before[t] ?? 0;
        // A sender restart resets its sums: then all it counted since is new.
        delta[t] += c >= b ? c - b : c;
      }
      now.set(n.source, cur);
    }
    const rejected = this.rejectedTotal();
    const nodes = states
      .filter((n) => NODE_GAUGES.some((g) => n.gauges[g] !== undefined))
      .map((n) => ({
        index: n.index,
        healthy: healthy(n),
        cpuCount: clampInt(n.gauges.cpuCount, COUNT_MAX),
        cpuUsedPct: Math.min(100_000, Math.max(0, Math.round((n.gauges.cpuUsedPct ?? 0) * 100) / 100)),
        memoryBytes: clampInt(n.gauges.memoryTotal, BYTES_MAX),
        memoryUsedBytes: clampInt(n.gauges.memoryUsed, BYTES_MAX),
        diskBytes: clampInt(n.gauges.diskTotal, BYTES_MAX),
        diskUsedBytes: clampInt(n.gauges.diskUsed, BYTES_MAX),
      }));
    const report: ClusterMetricsReport = {
      schema: 'cove.cluster-metrics.v1',
      sampledAt: new Date(nowMs).toISOString(),
      nodes,
      sandboxes: {
        running: clampInt(sum('sandboxesRunning'), COUNT_MAX),
        paused: clampInt(sum('sandboxesPaused'), COUNT_MAX),
        starting: clampInt(sum('sandboxesStarting'), COUNT_MAX),
      },
      builds: {
        running: clampInt(sum('buildsRunning'), COUNT_MAX),
        succeeded: clampInt(delta.buildsSucceededTotal, COUNT_MAX),
        failed: clampInt(delta.buildsFailedTotal, COUNT_MAX),
      },
      errors: {
        sandboxCreateFailed: clampInt(delta.sandboxCreateFailedTotal, COUNT_MAX),
        resumeFailed: clampInt(delta.resumeFailedTotal, COUNT_MAX),
        // Dropped on the way in: by senders (their own count) and refused here.
        telemetryDropped: clampInt(delta.telemetryDroppedTotal + (rejected - this.reportedRejected), COUNT_MAX),
      },
    };
    return {
      report,
      commit: () => {
        for (const [k, v] of now) this.reported.set(k, v);
        this.reportedRejected = rejected;
      },
    };
  }

  /** Builds, checks and posts one report. Never throws: failures are logged and counted, the next one retries. */
  async sendOnce(nowMs = Date.now()): Promise<'sent' | 'refused' | 'failed' | 'invalid'> {
    const { report, commit } = this.build(nowMs);
    const checked = ClusterMetricsReport.safeParse(report);
    if (!checked.success) {
      this.log.error({ issues: checked.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`) }, 'cluster metrics report failed its own schema; not sent');
      this.metrics.reports.inc({ outcome: 'invalid' });
      return 'invalid';
    }
    try {
      const res = await request(`${this.opts.controlPlaneUrl}/cluster/v1/metrics`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.opts.clusterToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(checked.data),
        headersTimeout: SEND_TIMEOUT_MS,
        bodyTimeout: SEND_TIMEOUT_MS,
      });
      await res.body.dump();
      if (res.statusCode >= 200 && res.statusCode < 300) {
        commit();
        this.metrics.reports.inc({ outcome: 'sent' });
        return 'sent';
      }
      this.log.warn({ status: res.statusCode }, 'control plane refused the cluster metrics report');
      this.metrics.reports.inc({ outcome: 'refused' });
      return 'refused';
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cluster metrics report not delivered');
      this.metrics.reports.inc({ outcome: 'failed' });
      return 'failed';
    }
  }

  start(): void {
    this.timer = setInterval(() => {
      // One report at a time: a slow control plane never piles them up.
      this.inFlight ??= this.sendOnce().then(() => {
        this.inFlight = undefined;
      });
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.inFlight;
  }
}

function pickTotals(n: NodeState): Partial<Record<Total, number>> {
  const out: Partial<Record<Total, number>> = {};
  for (const t of TOTALS) if (n.gauges[t] !== undefined) out[t] = n.gauges[t];
  return out;
}
