// Prometheus /metrics (prom-client) for every component, on its own API port behind a bearer token: there is no
// unauthenticated port (docs/observability.md, "Prometheus").

import type { IncomingMessage, ServerResponse } from 'node:http';
import { tokensEqual } from '@cove/auth-tokens';
import { TELEMETRY_DROPPED_METRIC } from '@cove/contracts/telemetry';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DroppedCounts } from './otlp-sender.js';

export const METRICS_PATH = '/metrics';

/** A component's registry with the process defaults and the telemetry drop counter every component exposes. */
export function componentRegistry(component: string, dropped: () => DroppedCounts | undefined): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  collectDefaultMetrics({ register: registry, prefix: 'cove_' });
  new Counter({
    name: TELEMETRY_DROPPED_METRIC,
    help: 'Telemetry records this process dropped (queue full, collector down or refusing)',
    labelNames: ['signal'],
    registers: [registry],
    collect() {
      const d = dropped() ?? { logs: 0, metrics: 0 };
      this.reset();
      this.inc({ signal: 'logs' }, d.logs);
      this.inc({ signal: 'metrics' }, d.metrics);
    },
  });
  return registry;
}

/** Request count and latency by operation and outcome (RPC method or HTTP route). */
export interface RequestMetrics {
  observe(operation: string, outcome: string, seconds: number): void;
}

export function requestMetrics(registry: Registry, prefix: 'cove_rpc' | 'cove_http'): RequestMetrics {
  const total = new Counter({
    name: `${prefix}_requests_total`,
    help: 'Requests served, by operation and outcome (RPC code or HTTP status)',
    labelNames: ['operation', 'outcome'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: `${prefix}_request_duration_seconds`,
    help: 'Request latency by operation',
    labelNames: ['operation'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  return {
    observe(operation, outcome, seconds) {
      total.inc({ operation, outcome });
      duration.observe({ operation }, seconds);
    },
  };
}

/**
 * Answers `GET /metrics` with `Authorization: Bearer <token>`; 401 JSON without a token, 403 with a wrong one (as
 * every other authenticated route of Cove). Returns false (and answers
 * nothing) for any other request, so a server can try it first.
 */
export function serveMetrics(registry: Registry, token: string, req: IncomingMessage, res: ServerResponse): boolean {
  const path = (req.url ?? '').split('?', 1)[0];
  if (path !== METRICS_PATH) return false;
  const reply = (status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    reply(405, { code: 405, message: 'method not allowed' });
    return true;
  }
  const auth = req.headers.authorization ?? '';
  const given = auth.startsWith('Bearer ') ? auth.slice(7) : '';
  if (!given) {
    reply(401, { code: 401, message: 'missing bearer token: send authorization: Bearer <token>' });
    return true;
  }
  if (!tokensEqual(given, token)) {
    reply(403, { code: 403, message: 'invalid bearer token' });
    return true;
  }
  registry.metrics().then(
    (text) => {
      res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    () => reply(500, { code: 500, message: 'collecting metrics failed' }),
  );
  return true;
}

export { Counter, Gauge, Histogram, Registry } from 'prom-client';
