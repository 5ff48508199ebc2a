// Heartbeats to the edge (cove.edge.v1.NodeRegistry): every interval, the node's Info, where to reach it,
// and the ids of its sandboxes, so edges can register the node and rebuild their catalog. Failures are
// logged — at warn once per minute at most, debug otherwise — and never stop the loop.

import { create } from '@bufbuild/protobuf';
import { createClient, type Client } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { HeartbeatRequestSchema, NodeRegistry, SandboxTrafficSchema } from '@cove/contracts/edge';
import type { InfoResponse } from '@cove/contracts/orchestrator';
import { rootCertificates } from 'node:tls';
import type { Logger } from 'pino';

export interface HeartbeatOptions {
  edgeUrl: string;
  /** For an `https://` edge: extra CAs (PEM, added to the system roots) and a client certificate for mutual TLS. */
  tls?: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined };
  nodeToken: string;
  rpcUrl: string;
  proxyUrl: string;
  intervalMs: number;
  info: () => Promise<InfoResponse>;
  /** Sandboxes on the node with the sha256 of their traffic token ('' = public). */
  sandboxes: () => { sandboxId: string; trafficTokenSha256: string }[];
  log: Logger;
}

const WARN_EVERY_MS = 60_000;

export class Heartbeat {
  private readonly client: Client<typeof NodeRegistry>;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private lastWarn = 0;
  private failing = false;
  private stopped = false;

  constructor(private readonly opts: HeartbeatOptions) {
    const tls = opts.tls ?? {};
    const nodeOptions = opts.edgeUrl.startsWith('https:')
      ? {
          ...(tls.ca ? { ca: [...rootCertificates, tls.ca] } : {}),
          ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
        }
      : undefined;
    this.client = createClient(NodeRegistry, createGrpcTransport({ baseUrl: opts.edgeUrl, nodeOptions }));
  }

  start(): void {
    this.stopped = false;
    this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.inFlight;
  }

  /** Send one heartbeat now (also used by the loop). */
  async beat(): Promise<void> {
    const { opts } = this;
    const sandboxes = opts.sandboxes();
    const req = create(HeartbeatRequestSchema, {
      info: await opts.info(),
      rpcUrl: opts.rpcUrl,
      proxyUrl: opts.proxyUrl,
      sandboxIds: sandboxes.map((s) => s.sandboxId),
      sandboxTraffic: sandboxes.map((s) => create(SandboxTrafficSchema, s)),
    });
    await this.client.heartbeat(req, {
      headers: { authorization: `Bearer ${opts.nodeToken}` },
      timeoutMs: Math.max(1000, opts.intervalMs),
    });
  }

  private tick(): void {
    if (this.stopped) return;
    this.inFlight = this.beat()
      .then(() => {
        if (this.failing) this.opts.log.info({ edgeUrl: this.opts.edgeUrl }, 'heartbeat to edge recovered');
        this.failing = false;
      })
      .catch((err: unknown) => {
        this.failing = true;
        const now = Date.now();
        if (now - this.lastWarn >= WARN_EVERY_MS) {
          this.lastWarn = now;
          this.opts.log.warn({ err, edgeUrl: this.opts.edgeUrl }, 'heartbeat to edge failed');
        } else {
          this.opts.log.debug({ err }, 'heartbeat to edge failed');
        }
      })
      .finally(() => {
        this.inFlight = undefined;
        if (this.stopped) return;
        this.timer = setTimeout(() => this.tick(), this.opts.intervalMs);
        this.timer.unref();
      });
  }
}
