// Prometheus metrics of the control plane (prom-client), served at `GET /metrics` behind the admin token
// (`authorization: Bearer <admin token>` as Prometheus sends it, or X-Admin-Token): request rates and latencies
// by route pattern (never the URL: it carries sandbox ids), live sandboxes, cluster reports received and refused.

import type { FastifyInstance } from 'fastify';
import { bearerToken, tokenMatchesHash } from '@cove/auth-tokens';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { Unauthenticated } from '../errors.js';

export class ControlPlaneMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'cove_cp_http_requests_total', help: 'HTTP requests by method, route pattern and status', labelNames: ['method', 'route', 'status'] as const, registers: [this.registry] });
  readonly latency = new Histogram({
    name: 'cove_cp_http_request_duration_seconds',
    help: 'HTTP request duration by method and route pattern',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly clusterReports = new Counter({ name: 'cove_cp_cluster_metrics_reports_total', help: 'Cluster metrics reports by outcome', labelNames: ['outcome'] as const, registers: [this.registry] });

  constructor(liveSandboxes: () => Promise<number>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'cove_cp_' });
    new Gauge({
      name: 'cove_cp_live_sandboxes',
      help: 'Sandboxes the control plane records as live (every team)',
      registers: [this.registry],
      async collect() {
        this.set(await liveSandboxes());
      },
    });
  }

  install(app: FastifyInstance, adminTokenHash: string): void {
    app.addHook('onResponse', async (req, reply) => {
      // Unmatched URLs share one label so a scan of random paths cannot grow the series without bound.
      const route = req.routeOptions.url ?? 'unmatched';
      this.requests.inc({ method: req.method, route, status: String(reply.statusCode) });
      this.latency.observe({ method: req.method, route }, reply.elapsedTime / 1000);
      if (route === '/cluster/v1/metrics' && req.method === 'POST') this.clusterReports.inc({ outcome: reply.statusCode < 300 ? 'accepted' : 'refused' });
    });
    app.get('/metrics', async (req, reply) => {
      const admin = req.headers['x-admin-token'];
      const token = typeof admin === 'string' ? admin : bearerToken(req.headers.authorization);
      if (!token || !tokenMatchesHash(token, adminTokenHash)) throw new Unauthenticated('missing or invalid admin token (authorization: Bearer <admin token>)');
      void reply.header('content-type', this.registry.contentType);
      return this.registry.metrics();
    });
  }
}
