// The anonymized metrics clusters post (POST /cluster/v1/metrics, the strict ClusterMetricsReport of
// @cove/contracts/telemetry) kept as a bounded time series per cluster, and the health and alerts derived from it
// (GET /admin/clusters/{id}/health, `cove status`). Only reports that passed the schema are stored, so nothing
// but counts and capacities is ever here.

import { randomUUID } from 'node:crypto';
import type { ClusterMetricsReport } from '@cove/contracts/telemetry';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';

export interface AlertThresholds {
  /** A node's CPU, memory or disk use above this percentage of its capacity raises `capacity_high`. */
  capacityPct: number;
  /** No report for this long raises `reports_missing`. */
  reportStaleMs: number;
}

export interface RetentionLimits {
  maxAgeMs: number;
  /** Most reports kept per cluster (oldest dropped first). */
  maxReports: number;
}

export type Alert =
  | { kind: 'reports_missing'; message: string; lastReportAt: string | null }
  | { kind: 'node_missing'; node: number; message: string }
  | { kind: 'node_unhealthy'; node: number; message: string }
  | { kind: 'capacity_high'; node: number; resource: 'cpu' | 'memory' | 'disk'; usedPct: number; message: string };

export interface ClusterHealth {
  clusterId: string;
  status: 'healthy' | 'degraded' | 'unknown';
  lastReportAt: string | null;
  report: ClusterMetricsReport | null;
  alerts: Alert[];
}

const pct = (used: number, total: number) => (total > 0 ? Math.round((used / total) * 1000) / 10 : 0);

export class ClusterMetricsStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly retention: RetentionLimits,
  ) {}

  /** Stores one validated report and prunes the cluster's series to the retention limits. */
  async add(clusterId: string, report: ClusterMetricsReport, now = Date.now()): Promise<void> {
    await this.db
      .insertInto('cluster_metrics')
      .values({ id: randomUUID(), cluster_id: clusterId, sampled_at: Date.parse(report.sampledAt), received_at: now, report: JSON.stringify(report) })
      .execute();
    await this.db.deleteFrom('cluster_metrics').where('cluster_id', '=', clusterId).where('received_at', '<', now - this.retention.maxAgeMs).execute();
    // By id, not by a received_at cutoff: reports received in the same millisecond must not go together.
    const stale = await this.db
      .selectFrom('cluster_metrics')
      .select('id')
      .where('cluster_id', '=', clusterId)
      .orderBy('received_at', 'desc')
      .orderBy('id', 'desc')
      .limit(10_000)
      .offset(this.retention.maxReports)
      .execute();
    if (stale.length) await this.db.deleteFrom('cluster_metrics').where('id', 'in', stale.map((r) => r.id)).execute();
  }

  /** The newest `n` reports of a cluster, newest first. */
  async latest(clusterId: string, n: number): Promise<Array<{ receivedAt: number; report: ClusterMetricsReport }>> {
    const rows = await this.db
      .selectFrom('cluster_metrics')
      .select(['received_at', 'report'])
      .where('cluster_id', '=', clusterId)
      .orderBy('received_at', 'desc')
      .limit(n)
      .execute();
    return rows.map((r) => ({ receivedAt: Number(r.received_at), report: JSON.parse(r.report) as ClusterMetricsReport }));
  }

  async count(clusterId: string): Promise<number> {
    const r = await this.db.selectFrom('cluster_metrics').select((eb) => eb.fn.countAll<number>().as('n')).where('cluster_id', '=', clusterId).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  /**
   * Health from the latest report: nodes seen in recent reports but absent from the latest are missing; unhealthy
   * nodes and nodes over the capacity threshold raise alerts; no report for too long is an alert of its own.
   */
  async health(clusterId: string, t: AlertThresholds, now = Date.now()): Promise<ClusterHealth> {
    const recent = await this.latest(clusterId, 10);
    const head = recent[0];
    if (!head) {
      return { clusterId, status: 'unknown', lastReportAt: null, report: null, alerts: [{ kind: 'reports_missing', message: 'the cluster has sent no metrics report yet', lastReportAt: null }] };
    }
    const alerts: Alert[] = [];
    const lastReportAt = new Date(head.receivedAt).toISOString();
    if (now - head.receivedAt > t.reportStaleMs) {
      alerts.push({ kind: 'reports_missing', message: `no metrics report for ${Math.round((now - head.receivedAt) / 1000)} s`, lastReportAt });
    }
    const present = new Set(head.report.nodes.map((n) => n.index));
    const seen = new Set(recent.slice(1).flatMap((r) => r.report.nodes.map((n) => n.index)));
    for (const index of [...seen].sort((a, b) => a - b)) {
      if (!present.has(index)) alerts.push({ kind: 'node_missing', node: index, message: `node ${index} reported recently and is missing from the latest report` });
    }
    for (const n of head.report.nodes) {
      if (!n.healthy) alerts.push({ kind: 'node_unhealthy', node: n.index, message: `node ${n.index} is unhealthy` });
      const usage: Array<['cpu' | 'memory' | 'disk', number]> = [
        ['cpu', Math.round(n.cpuUsedPct * 10) / 10],
        ['memory', pct(n.memoryUsedBytes, n.memoryBytes)],
        ['disk', pct(n.diskUsedBytes, n.diskBytes)],
      ];
      for (const [resource, usedPct] of usage) {
        if (usedPct > t.capacityPct) alerts.push({ kind: 'capacity_high', node: n.index, resource, usedPct, message: `node ${n.index} ${resource} at ${usedPct}% (threshold ${t.capacityPct}%)` });
      }
    }
    return { clusterId, status: alerts.length > 0 ? 'degraded' : 'healthy', lastReportAt, report: head.report, alerts };
  }
}
