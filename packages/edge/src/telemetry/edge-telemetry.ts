// The edge's telemetry (docs/observability.md): its own log lines over OTLP to the collector when
// COVE_COLLECTOR_URL is set, and Prometheus /metrics on the API port behind the cluster token (or, with OIDC on,
// behind the customer's provider tokens).

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { performance } from 'node:perf_hooks';
import type { Writable } from 'node:stream';
import { Gauge, OtlpSender, componentRegistry, otlpLogStream, requestMetrics, serveMetrics, type Registry, type RequestMetrics } from '@cove/telemetry';
import type { EdgeConfig } from '../config.js';
import type { NodeDirectory } from '../nodes/node-directory.js';
import type { ClusterAuth } from '../api/cluster-auth.js';

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

/** `GET /sandboxes/abc/logs` → `GET /sandboxes`: the first path segment only, so ids never become labels. */
function operationOf(req: Req): string {
  const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
  const first = path.split('/')[1] ?? '';
  return `${req.method ?? 'GET'} /${/^[A-Za-z0-9._-]{1,64}$/.test(first) ? first : ''}`;
}

export class EdgeTelemetry {
  readonly sender: OtlpSender | undefined;
  readonly registry: Registry;
  private readonly http: RequestMetrics;

  constructor(config: Pick<EdgeConfig, 'edgeId' | 'telemetry'>) {
    const t = config.telemetry;
    this.sender = t ? new OtlpSender({ url: t.url, token: t.token, serviceName: 'cove-edge', instanceId: config.edgeId }) : undefined;
    this.registry = componentRegistry('edge', () => this.sender?.dropped());
    this.http = requestMetrics(this.registry, 'cove_http');
  }

  /** Where pino writes the lines that go to the collector (info and above); undefined when telemetry is off. */
  logStream(): Writable | undefined {
    return this.sender ? otlpLogStream(this.sender) : undefined;
  }

  /** Node counts by status, read from the directory at scrape time. */
  watchNodes(directory: NodeDirectory): void {
    new Gauge({
      name: 'cove_edge_nodes',
      help: 'Nodes this edge knows, by status',
      labelNames: ['status'],
      registers: [this.registry],
      async collect() {
        this.reset();
        const counts = new Map<string, number>();
        for (const n of await directory.list().catch(() => [])) counts.set(n.status, (counts.get(n.status) ?? 0) + 1);
        for (const [status, n] of counts) this.set({ status }, n);
      },
    });
  }

  /**
   * Counts the request when it finishes; answers it when it is `GET /metrics` (cluster token). Returns true
   * when the request was answered here.
   */
  handle(req: Req, res: Res, clusterToken: string, auth?: ClusterAuth): boolean {
    const t0 = performance.now();
    const op = operationOf(req);
    res.once('finish', () => this.http.observe(op, String(res.statusCode), (performance.now() - t0) / 1000));
    // With the customer's identity provider configured, the cluster token (which the vendor holds) does not open
    // /metrics either: the same provider tokens as the cluster API do (Prometheus has an oauth2 client).
    if (auth?.oidcMode) {
      if ((req.url ?? '').split('?', 1)[0] !== '/metrics') return false;
      void this.serveToProviderToken(req, res, auth);
      return true;
    }
    return serveMetrics(this.registry, clusterToken, req as IncomingMessage, res as ServerResponse);
  }

  private async serveToProviderToken(req: Req, res: Res, auth: ClusterAuth): Promise<void> {
    const w = res as ServerResponse;
    const reply = (status: number, body: unknown): void => {
      const text = JSON.stringify(body);
      w.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      w.end(text);
    };
    req.resume();
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, { code: 405, message: 'method not allowed' });
    try {
      const a = await auth.check(req.headers);
      if (!a.ok) return reply(a.status, { code: a.status, error: a.error, message: a.message });
      const text = await this.registry.metrics();
      w.writeHead(200, { 'content-type': this.registry.contentType, 'cache-control': 'no-store' });
      w.end(req.method === 'HEAD' ? undefined : text);
    } catch {
      reply(500, { code: 500, message: 'collecting metrics failed' });
    }
  }

  /** Sends what is queued, for at most 3 s: a collector that is down must not hold a stopping edge. */
  async close(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.sender?.shutdown(), new Promise((r) => (timer = setTimeout(r, 3000)))]);
    clearTimeout(timer);
  }
}
