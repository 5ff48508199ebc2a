// The collector's HTTP server: OTLP/HTTP intake, the query API the edge calls, Prometheus /metrics and /health.
// One bearer token (COVE_COLLECTOR_TOKEN) guards everything but /health.

import { bearerToken, tokensEqual } from '@cove/auth-tokens';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { CollectorConfig } from './config.js';
import { decodeLogs, decodeMetrics, LogsRequest, MetricsRequest } from './otlp.js';
import { collectorMetrics, type CollectorMetrics } from './prom.js';
import {
  buildLogsBody,
  buildLogsQuery,
  InvalidQuery,
  manyMetricsQuery,
  sandboxLogsBody,
  sandboxLogsQuery,
  sandboxMetric,
  sandboxMetricsQuery,
} from './query.js';
import { Reporter } from './report.js';
import { Store } from './store.js';

/** OTLP request bodies above this are refused (413): a sender batches below it. */
export const MAX_BODY_BYTES = 4 * 1024 * 1024;
const EXPIRE_EVERY_MS = 60_000;

export type ErrorCode = 'unauthenticated' | 'permission_denied' | 'invalid_argument' | 'payload_too_large' | 'unsupported_media_type' | 'not_found' | 'internal';

export interface Collector {
  app: FastifyInstance;
  store: Store;
  metrics: CollectorMetrics;
  reporter?: Reporter;
  /** Listens on config host/port; resolves to the bound URL. */
  listen(): Promise<string>;
  close(): Promise<void>;
}

function sendError(reply: FastifyReply, status: number, code: ErrorCode, message: string): FastifyReply {
  return reply.code(status).header('cache-control', 'no-store').send({ code: status, error: code, message });
}

export function buildCollector(config: CollectorConfig, deps: { log: Logger; now?: () => number }): Collector {
  const now = deps.now ?? Date.now;
  const store = new Store(config.dataDir, { logBytes: config.logRetentionBytes, metricBytes: config.metricRetentionBytes, retentionMs: config.retentionMs });
  const metrics = collectorMetrics(store);
  const rejected = { logs: 0, metrics: 0 };
  const reporter = config.report
    ? new Reporter(store, () => rejected.logs + rejected.metrics, config.report, deps.log.child({ module: 'report' }), metrics)
    : undefined;
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    bodyLimit: MAX_BODY_BYTES,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
  });

  const expire = () => {
    const d = store.expire(now());
    if (d.logs) metrics.retentionDropped.inc({ table: 'logs', bound: 'age' }, d.logs);
    if (d.metrics) metrics.retentionDropped.inc({ table: 'metrics', bound: 'age' }, d.metrics);
  };
  expire();
  const expireTimer = setInterval(expire, EXPIRE_EVERY_MS);
  expireTimer.unref();

  app.addHook('onRequest', async (req, reply) => {
    if (req.url === '/health') return;
    const header = req.headers.authorization;
    if (header === undefined) return sendError(reply, 401, 'unauthenticated', 'missing collector token (authorization: Bearer <COVE_COLLECTOR_TOKEN>)');
    const given = bearerToken(header);
    if (given === undefined || !tokensEqual(given, config.token)) return sendError(reply, 403, 'permission_denied', 'invalid collector token');
    if (req.method === 'POST' && (req.url === '/v1/logs' || req.url === '/v1/metrics')) {
      // Refused before the body is read: OTLP JSON only (docs/decisions.md, "Collector").
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json') {
        return sendError(reply, 415, 'unsupported_media_type', `content-type ${type || '(none)'} is not supported: send OTLP/HTTP JSON (application/json)`);
      }
      const enc = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
      if (enc !== 'identity') return sendError(reply, 415, 'unsupported_media_type', `content-encoding ${enc} is not supported: send the body uncompressed`);
    }
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof InvalidQuery) return sendError(reply, 400, 'invalid_argument', err.message);
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413) return sendError(reply, 413, 'payload_too_large', `request body is larger than ${MAX_BODY_BYTES} bytes`);
    if (err.statusCode === 415) return sendError(reply, 415, 'unsupported_media_type', err.message);
    if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return sendError(reply, 400, 'invalid_argument', err.message);
    req.log.error({ err }, 'collector request failed');
    return sendError(reply, 500, 'internal', 'internal error');
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, 404, 'not_found', `no route ${req.method} ${req.url.split('?')[0]}`));

  app.get('/health', async () => ({ status: 'ok' }));

  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  const bodyOf = <T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: Array<{ path: (string | number)[]; message: string }> } } }, body: unknown): T => {
    if (body === undefined || body === null || typeof body !== 'object') throw new InvalidQuery('body must be an OTLP JSON object');
    const r = schema.safeParse(body);
    if (!r.success) throw new InvalidQuery(`not an OTLP JSON request: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`);
    return r.data;
  };

  app.post('/v1/logs', async (req) => {
    const d = decodeLogs(bodyOf(LogsRequest, req.body), now());
    const dropped = store.addLogs(d.rows);
    metrics.ingested.inc({ signal: 'logs' }, d.rows.length);
    if (dropped) metrics.retentionDropped.inc({ table: 'logs', bound: 'bytes' }, dropped);
    if (d.rejected === 0) return {};
    rejected.logs += d.rejected;
    metrics.rejected.inc({ signal: 'logs' }, d.rejected);
    return { partialSuccess: { rejectedLogRecords: d.rejected, errorMessage: d.reason } };
  });

  app.post('/v1/metrics', async (req) => {
    const d = decodeMetrics(bodyOf(MetricsRequest, req.body), now());
    const dropped = store.addSandboxPoints(d.sandbox);
    store.addNodePoints(d.node);
    metrics.ingested.inc({ signal: 'metrics' }, d.sandbox.length + d.node.length);
    if (dropped) metrics.retentionDropped.inc({ table: 'metrics', bound: 'bytes' }, dropped);
    if (d.rejected === 0) return {};
    rejected.metrics += d.rejected;
    metrics.rejected.inc({ signal: 'metrics' }, d.rejected);
    return { partialSuccess: { rejectedDataPoints: d.rejected, errorMessage: d.reason } };
  });

  /** A query route: parameters parsed (400 on malformed), latency observed, never cached. */
  const query = (route: string, handler: (req: FastifyRequest) => unknown) => {
    app.get(route, async (req, reply) => {
      const end = metrics.queryDuration.startTimer({ route });
      try {
        reply.header('cache-control', 'no-store');
        return handler(req);
      } finally {
        end();
      }
    });
  };
  const params = (req: FastifyRequest) => req.params as Record<string, unknown>;
  const qs = (req: FastifyRequest) => req.query as Record<string, unknown>;

  // Rows of another team never answer: a sandbox or build of another team reads as one with no data (as E2B's
  // edge does); whether it exists is the control plane's question, asked before it grants the request.
  query('/v1/sandboxes/:sandboxID/logs', (req) => sandboxLogsBody(store.sandboxLogs(sandboxLogsQuery(params(req), qs(req), now(), config.retentionMs))));
  query('/v1/sandboxes/:sandboxID/metrics', (req) => store.sandboxMetrics(sandboxMetricsQuery(params(req), qs(req), now(), config.retentionMs)).map(sandboxMetric));
  query('/v1/sandboxes/metrics', (req) => {
    const q = manyMetricsQuery(qs(req));
    const latest = store.latestMetrics(q.teamId, q.sandboxIds);
    return { sandboxes: Object.fromEntries([...latest].map(([id, s]) => [id, sandboxMetric(s)])) };
  });
  query('/v1/templates/builds/:buildID/logs', (req) => buildLogsBody(store.buildLogs(buildLogsQuery(params(req), qs(req), now(), config.retentionMs))));

  let closed = false;
  return {
    app,
    store,
    metrics,
    reporter,
    async listen() {
      const url = await app.listen({ host: config.host, port: config.port });
      reporter?.start();
      return url;
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(expireTimer);
      await reporter?.stop();
      await app.close();
      store.close();
    },
  };
}
