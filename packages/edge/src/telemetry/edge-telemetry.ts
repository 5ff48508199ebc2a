// The edge's telemetry (docs/observability.md): its own log lines over OTLP to the collector when
// COVE_COLLECTOR_URL is set, and Prometheus /metrics on the API port behind the cluster token.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { performance } from 'node:perf_hooks';
import type { Writable } from 'node:stream';
import { Gauge, OtlpSender, componentRegistry, otlpLogStream, requestMetrics, serveMetrics, type Registry, type RequestMetrics } from '@cove/telemetry';
import type { EdgeConfig } from '../config.js';
import type { NodeDirectory } from '../nodes/node-directory.js';

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
  handle(req: Req, res: Res, clusterToken: string): boolean {
    const t0 = performance.now();
    const op = operationOf(req);
    res.once('finish', () => this.http.observe(op, String(res.statusCode), (performance.now() - t0) / 1000));
    return serveMetrics(this.registry, clusterToken, req as IncomingMessage, res as ServerResponse);
  }

  /** Sends what is queued, for at most 3 s: a collector that is down must not hold a stopping edge. */
  async close(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.sender?.shutdown(), new Promise((r) => (timer = setTimeout(r, 3000)))]);
    clearTimeout(timer);
  }
}
