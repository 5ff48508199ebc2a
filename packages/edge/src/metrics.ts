// Prometheus metrics of the edge (prom-client), served at `GET /metrics` on the API port behind the cluster
// token: public-port requests and latencies by route name (never the URL: it carries ids and grants), grant
// refusals, collector failures, and nodes by health.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { NodeDirectory } from './nodes/node-directory.js';

export class EdgeMetrics {
  readonly registry = new Registry();
  readonly publicRequests = new Counter({ name: 'cove_edge_public_requests_total', help: 'Public-port requests by route and status', labelNames: ['route', 'status'] as const, registers: [this.registry] });
  readonly publicLatency = new Histogram({
    name: 'cove_edge_public_request_duration_seconds',
    help: 'Public-port request duration by route',
    labelNames: ['route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly grantRefusals = new Counter({ name: 'cove_edge_grant_refusals_total', help: 'Public-port requests refused for their grant, by status', labelNames: ['status'] as const, registers: [this.registry] });
  readonly collectorErrors = new Counter({ name: 'cove_edge_collector_errors_total', help: 'Collector queries that failed or answered out of shape', registers: [this.registry] });

  constructor(directory: NodeDirectory) {
    collectDefaultMetrics({ register: this.registry, prefix: 'cove_edge_' });
    new Gauge({
      name: 'cove_edge_nodes',
      help: 'Nodes the edge knows, by health',
      labelNames: ['status'] as const,
      registers: [this.registry],
      async collect() {
        const nodes = await directory.list().catch(() => []);
        for (const s of ['healthy', 'draining', 'unhealthy'] as const) this.set({ status: s }, nodes.filter((n) => n.status === s).length);
      },
    });
  }
}
