// The edge's side of the outbound-only control link (docs/operating.md, "Outbound-only clusters"): the edge dials
// the control plane — TLS verified against the system roots and NODE_EXTRA_CA_CERTS (http only on loopback,
// config.ts) — proves its cluster with the cluster token in an HTTP/1.1 Upgrade, and on 101 hands the connection
// to the API port's HTTP/2 server, so the control plane's calls arrive exactly as they do on a direct link (and
// each still carries its own credential, checked by ClusterAuth as there). A refused or dropped link is re-dialled
// with capped, jittered exponential backoff; sandboxes and SDK traffic never depend on it.

import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { EDGE_ID_HEADER, LINK_PATH, LINK_PROTOCOL } from '@cove/contracts/link';
import type { Logger } from 'pino';

export interface OutboundDialerOptions {
  /** The control plane's base URL (path prefix kept). */
  controlPlaneUrl: string;
  clusterToken: string;
  edgeId: string;
  /** Takes an established link: the API port serves HTTP/2 on it. */
  adopt(socket: Duplex): void;
  log: Logger;
  /** Backoff bounds; defaults 500 ms and 30 s. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** The whole handshake (connect, TLS, 101) must finish within this; default 10 s. */
  handshakeTimeoutMs?: number;
  /** A link that lived at least this long resets the backoff; default 10 s. */
  stableAfterMs?: number;
}

/** What the dialer is doing, for logs, health and tests. */
export type DialerState = 'idle' | 'dialling' | 'open' | 'backoff' | 'closed';

/** The most of a refusal's body read (its JSON error); the rest is dropped. */
const MAX_REFUSAL_BYTES = 4096;

export class OutboundDialer {
  private state: DialerState = 'idle';
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private pending: ClientRequest | undefined;
  private link: Duplex | undefined;
  private readonly listeners = new Set<(s: DialerState) => void>();

  constructor(private readonly o: OutboundDialerOptions) {}

  get current(): DialerState {
    return this.state;
  }

  /** Called on every state change (tests wait on conditions with it). */
  onState(fn: (s: DialerState) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private set(s: DialerState): void {
    this.state = s;
    for (const fn of this.listeners) fn(s);
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.dial();
  }

  private dial(): void {
    if (this.state === 'closed') return;
    this.set('dialling');
    const url = new URL(`${this.o.controlPlaneUrl.replace(/\/+$/, '')}${LINK_PATH}`);
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method: 'GET',
      agent: false,
      headers: {
        connection: 'Upgrade',
        upgrade: LINK_PROTOCOL,
        authorization: `Bearer ${this.o.clusterToken}`,
        [EDGE_ID_HEADER]: this.o.edgeId,
      },
      timeout: this.o.handshakeTimeoutMs ?? 10_000,
      minVersion: 'TLSv1.2',
    });
    this.pending = req;
    let settled = false;
    const fail = (reason: Record<string, unknown>, msg: string): void => {
      if (settled) return;
      settled = true;
      this.pending = undefined;
      req.destroy();
      this.o.log.warn({ controlPlane: url.origin, ...reason }, msg);
      this.retry();
    };
    req.on('timeout', () => fail({ timeoutMs: this.o.handshakeTimeoutMs ?? 10_000 }, 'control link handshake timed out'));
    req.on('error', (err: NodeJS.ErrnoException) => fail({ err: err.message, code: err.code }, 'control link dial failed'));
    req.on('response', (res: IncomingMessage) => {
      // Not upgraded: the control plane refused (wrong token, a cluster it dials itself, …). Its JSON error says why.
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < MAX_REFUSAL_BYTES) body += chunk.slice(0, MAX_REFUSAL_BYTES - body.length);
      });
      const done = (): void => {
        let code: unknown;
        try {
          code = (JSON.parse(body) as { error_code?: unknown }).error_code;
        } catch {
          code = undefined;
        }
        if (settled) return;
        settled = true;
        this.pending = undefined;
        req.destroy();
        this.o.log.error(
          { controlPlane: url.origin, status: res.statusCode, errorCode: typeof code === 'string' ? code.slice(0, 64) : undefined, message: body.slice(0, 512) },
          'control link refused by the control plane',
        );
        this.retry();
      };
      res.on('end', done);
      res.on('error', done);
      res.on('close', done);
    });
    req.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      if (settled) {
        socket.destroy();
        return;
      }
      settled = true;
      this.pending = undefined;
      if (res.statusCode !== 101 || (res.headers.upgrade ?? '').toLowerCase() !== LINK_PROTOCOL) {
        socket.destroy();
        this.o.log.error({ controlPlane: url.origin, status: res.statusCode, upgrade: res.headers.upgrade?.slice(0, 64) }, 'control link refused: the control plane answered another protocol');
        this.retry();
        return;
      }
      if (this.state === 'closed') {
        socket.destroy();
        return;
      }
      socket.setTimeout(0);
      socket.setNoDelay(true);
      // Dead peers without a FIN: TCP keep-alive as a floor; the control plane's pings are the real liveness check.
      socket.setKeepAlive(true, 15_000);
      // A control plane that closed its side has left: no half-open link.
      socket.once('end', () => socket.destroy());
      if (head.length > 0) socket.unshift(head);
      const openedAt = Date.now();
      this.link = socket;
      this.set('open');
      this.o.log.info({ controlPlane: url.origin, edgeId: this.o.edgeId }, 'control link open (outbound)');
      socket.once('close', () => {
        if (this.link === socket) this.link = undefined;
        if (this.state === 'closed') return;
        if (Date.now() - openedAt >= (this.o.stableAfterMs ?? 10_000)) this.failures = 0;
        this.o.log.warn({ controlPlane: url.origin, upMs: Date.now() - openedAt }, 'control link closed; re-dialling');
        this.retry();
      });
      this.o.adopt(socket);
    });
    req.end();
  }

  private retry(): void {
    if (this.state === 'closed') return;
    const min = this.o.minBackoffMs ?? 500;
    const max = this.o.maxBackoffMs ?? 30_000;
    const base = Math.min(max, min * 2 ** Math.min(this.failures, 16));
    this.failures++;
    // Jittered between half and all of the step, so many edges of a restarted control plane do not dial at once.
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.set('backoff');
    this.timer = setTimeout(() => this.dial(), delay);
    this.timer.unref();
  }

  /** Stops dialling; an open link stays until the API port closes its session (gracefully) or close(). */
  stop(): void {
    this.set('closed');
    clearTimeout(this.timer);
    this.pending?.destroy();
  }

  /** Stops dialling and cuts the link (calls in flight on it fail UNAVAILABLE at the control plane). */
  close(): void {
    this.stop();
    this.link?.destroy();
  }
}
