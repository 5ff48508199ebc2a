// The public port's Prometheus metrics (prom-client), in the edge's one registry (EdgeTelemetry serves it at
// `GET /metrics` on the API port behind the cluster token): requests and latencies by route name (never the URL:
// it carries ids and grants), grant refusals, collector failures.

import { Counter, Histogram, type Registry } from 'prom-client';

export class EdgeMetrics {
  readonly publicRequests: Counter<'route' | 'status'>;
  readonly publicLatency: Histogram<'route'>;
  readonly grantRefusals: Counter<'status'>;
  readonly collectorErrors: Counter;

  constructor(registry: Registry) {
    const registers = [registry];
    this.publicRequests = new Counter({ name: 'cove_edge_public_requests_total', help: 'Public-port requests by route and status', labelNames: ['route', 'status'] as const, registers });
    this.publicLatency = new Histogram({
      name: 'cove_edge_public_request_duration_seconds',
      help: 'Public-port request duration by route',
      labelNames: ['route'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.grantRefusals = new Counter({ name: 'cove_edge_grant_refusals_total', help: 'Public-port requests refused for their grant, by status', labelNames: ['status'] as const, registers });
    this.collectorErrors = new Counter({ name: 'cove_edge_collector_errors_total', help: 'Collector queries that failed or answered out of shape', registers });
  }
}
