// The collector's own Prometheus metrics (prom-client), one registry per collector so tests can run several.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Store } from './store.js';

export type Signal = 'logs' | 'metrics';

export function collectorMetrics(store: Store) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    ingested: new Counter({ name: 'cove_collector_records_ingested_total', help: 'Log records and metric data points stored', labelNames: ['signal'] as const, registers: [registry] }),
    rejected: new Counter({
      name: 'cove_collector_records_rejected_total',
      help: 'Log records and metric data points refused (missing or invalid Cove attributes)',
      labelNames: ['signal'] as const,
      registers: [registry],
    }),
    storedBytes: new Gauge({
      name: 'cove_collector_stored_bytes',
      help: 'Bytes accounted to stored rows, the figure retention bounds',
      labelNames: ['table'] as const,
      registers: [registry],
      collect() {
        this.set({ table: 'logs' }, store.bytes.logs);
        this.set({ table: 'metrics' }, store.bytes.metrics);
      },
    }),
    retentionDropped: new Counter({
      name: 'cove_collector_retention_dropped_total',
      help: 'Rows dropped by retention (oldest first)',
      labelNames: ['table', 'bound'] as const,
      registers: [registry],
    }),
    queryDuration: new Histogram({
      name: 'cove_collector_query_duration_seconds',
      help: 'Query API latency',
      labelNames: ['route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    reports: new Counter({ name: 'cove_collector_reports_total', help: 'Anonymized metrics reports to the control plane, by outcome', labelNames: ['outcome'] as const, registers: [registry] }),
  };
}
export type CollectorMetrics = ReturnType<typeof collectorMetrics>;
