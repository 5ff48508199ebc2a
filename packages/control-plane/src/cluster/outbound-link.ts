// Outbound-only control link (docs/operating.md, "Outbound-only clusters"): the cluster's edge dials the control
// plane (`GET /cluster/v1/link`, `Upgrade: cove-control-link/1`, `authorization: Bearer <cluster token>`), and
// once the control plane answers 101 the connection is turned around: the control plane is the HTTP/2 client,
// the edge the HTTP/2 server, exactly as on a direct link. So the control link's calls (gRPC + REST), their
// per-call timeouts and HTTP/2's bounded frames and flow control are the same code and the same wire shape on
// both kinds of cluster; what this module adds is who opens the TCP connection.
//
// Everything the edge sends is hostile: the handshake is read by Node's HTTP parser (bounded headers), a token of
// no outbound cluster is refused before any byte of HTTP/2, the HTTP/2 session is bounded (memory, header list),
// and a link that stops answering pings is cut. A dropped link fails its calls in flight (the HTTP/2 session's
// streams error out, the caller sees `cluster_unavailable` / gRPC UNAVAILABLE) and the reconciler settles them.

import { connect as h2connect, constants as h2, type ClientHttp2Session, type ClientHttp2Stream, type ClientSessionRequestOptions, type OutgoingHttpHeaders } from 'node:http2';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Code, ConnectError } from '@connectrpc/connect';
import { bearerToken, tokensEqual } from '@cove/auth-tokens';
import type { Logger } from 'pino';
import type { Cluster } from '../store/cluster-store.js';
import { EDGE_ID_HEADER, EDGE_ID_PATTERN, LINK_PATH, LINK_PROTOCOL, OUTBOUND_SCHEME } from '@cove/contracts/link';


export function isOutboundEndpoint(endpoint: string): boolean {
  return endpoint.toLowerCase().startsWith(`${OUTBOUND_SCHEME}//`);
}


export interface OutboundLinkOptions {
  /** The registered clusters (the handshake's token is compared with every one, in constant time each). */
  clusters: () => Promise<Cluster[]>;
  log: Logger;
  /** Ping period and how long a ping may go unanswered before the link is cut; defaults 15 s / 10 s. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** How long a call waits for a link that is being re-dialled before failing UNAVAILABLE; default 5 s. */
  waitForLinkMs?: number;
  /** Links one cluster may hold at once (one per edge); default 16. */
  maxLinksPerCluster?: number;
}

// ConnectError resets its instances' prototype (so a subclass is not `instanceof` itself): mark them instead.
const noLinkErrors = new WeakSet<ConnectError>();

/** A call to an outbound-only cluster that has no link open (gRPC UNAVAILABLE; the message names the cause). */
function noLinkOpen(clusterName: string): ConnectError {
  const err = new ConnectError(`cluster "${clusterName}" has no control link open (outbound-only: its edge dials the control plane)`, Code.Unavailable);
  noLinkErrors.add(err);
  return err;
}

export function isNoLinkOpen(err: unknown): err is ConnectError {
  return err instanceof ConnectError && noLinkErrors.has(err);
}

interface Link {
  edgeId: string;
  session: ClientHttp2Session;
  since: number;
}

/** The structured refusal of a handshake, as JSON (same shape as every control plane error). */
function refuse(socket: Duplex, status: number, reason: string, errorCode: string, message: string): void {
  const body = JSON.stringify({ code: status, message, error_code: errorCode });
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export class OutboundLinks {
  /** cluster id → edge id → link. One table: a call picks the newest open link of its cluster. */
  private readonly links = new Map<string, Map<string, Link>>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private closed = false;
  private readonly pingIntervalMs: number;
  private readonly pingTimeoutMs: number;
  private readonly waitForLinkMs: number;
  private readonly maxLinks: number;

  constructor(private readonly o: OutboundLinkOptions) {
    this.pingIntervalMs = o.pingIntervalMs ?? 15_000;
    this.pingTimeoutMs = o.pingTimeoutMs ?? 10_000;
    this.waitForLinkMs = o.waitForLinkMs ?? 5_000;
    this.maxLinks = o.maxLinksPerCluster ?? 16;
  }

  /** How many links a cluster holds now (health, tests). */
  count(clusterId: string): number {
    return this.links.get(clusterId)?.size ?? 0;
  }

  /** The HTTP server's `upgrade` listener. Every Upgrade request comes here; only the link's is accepted. */
  handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    this.accept(req, socket, head).catch((err: unknown) => {
      this.o.log.error({ err }, 'control link handshake failed');
      if (!socket.destroyed) refuse(socket, 500, 'Internal Server Error', 'internal', 'internal error');
    });
  };

  private async accept(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const from = (socket as Socket).remoteAddress;
    const path = (req.url ?? '').split('?')[0];
    if (path !== LINK_PATH) return refuse(socket, 404, 'Not Found', 'not_found', `no upgrade is served at ${path.slice(0, 200)}`);
    if (this.closed) return refuse(socket, 503, 'Service Unavailable', 'shutting_down', 'the control plane is shutting down');
    if ((req.headers.upgrade ?? '').toLowerCase() !== LINK_PROTOCOL) {
      this.o.log.warn({ from, upgrade: req.headers.upgrade?.slice(0, 64) }, 'control link refused: unsupported protocol');
      return refuse(socket, 400, 'Bad Request', 'link_protocol_unsupported', `upgrade must be ${LINK_PROTOCOL}`);
    }
    const edgeId = req.headers[EDGE_ID_HEADER];
    if (typeof edgeId !== 'string' || !EDGE_ID_PATTERN.test(edgeId)) {
      this.o.log.warn({ from }, 'control link refused: bad edge id');
      return refuse(socket, 400, 'Bad Request', 'edge_id_invalid', `${EDGE_ID_HEADER} must be 1-128 of A-Z a-z 0-9 . _ : -`);
    }
    const token = bearerToken(req.headers.authorization);
    if (!token) {
      this.o.log.warn({ from, edgeId }, 'control link refused: no cluster token');
      return refuse(socket, 401, 'Unauthorized', 'cluster_token_missing', 'missing cluster token: send authorization: Bearer <cluster token>');
    }
    // Every cluster is compared (no early exit), so the time taken does not say which one matched.
    let match: Cluster | undefined;
    for (const c of await this.o.clusters()) if (tokensEqual(token, c.token) && !match) match = c;
    if (socket.destroyed) return;
    if (!match) {
      this.o.log.warn({ from, edgeId }, 'control link refused: invalid cluster token');
      return refuse(socket, 403, 'Forbidden', 'cluster_token_invalid', 'invalid cluster token');
    }
    if (!isOutboundEndpoint(match.endpoint)) {
      // A cluster the control plane dials itself: a second way in would be a second thing to secure.
      this.o.log.warn({ from, edgeId, cluster: match.name }, 'control link refused: cluster is not registered as outbound-only');
      return refuse(socket, 409, 'Conflict', 'cluster_not_outbound', `cluster "${match.name}" is not registered as outbound-only (endpoint ${OUTBOUND_SCHEME}//…)`);
    }
    const mine = this.links.get(match.id);
    if (mine && !mine.has(edgeId) && mine.size >= this.maxLinks) {
      this.o.log.warn({ from, edgeId, cluster: match.name }, 'control link refused: too many links');
      return refuse(socket, 429, 'Too Many Requests', 'too_many_links', `cluster "${match.name}" already holds ${this.maxLinks} links`);
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${LINK_PROTOCOL}\r\nConnection: Upgrade\r\n\r\n`);
    this.open(match, edgeId, socket, head, from);
  }

  private open(cluster: Cluster, edgeId: string, socket: Duplex, head: Buffer, from: string | undefined): void {
    const s = socket as Socket;
    // The HTTP server's request timeouts no longer apply: liveness is the pings below.
    s.setTimeout?.(0);
    s.setNoDelay?.(true);
    // The HTTP server's sockets allow half-open: an edge that closed its side has left, whatever HTTP/2 thinks.
    socket.once('end', () => socket.destroy());
    if (head.length > 0) socket.unshift(head);
    const session = h2connect(`http://${encodeURIComponent(cluster.id)}.link.invalid`, {
      createConnection: () => socket,
      // What a hostile edge can make this process hold: its header lists, and its session's buffered bytes (MB).
      maxHeaderListPairs: 128,
      maxSessionMemory: 64,
      settings: { maxHeaderListSize: 64 * 1024, enablePush: false },
    });
    const link: Link = { edgeId, session, since: Date.now() };
    let table = this.links.get(cluster.id);
    if (!table) this.links.set(cluster.id, (table = new Map()));
    const previous = table.get(edgeId);
    table.set(edgeId, link);
    // The same edge re-dialled (its old connection may be half-dead): new calls take the new link, calls in
    // flight on the old one finish there.
    previous?.session.close();
    this.o.log.info({ cluster: cluster.name, edgeId, from }, 'cluster control link open');

    const ping = setInterval(() => {
      const timer = setTimeout(() => session.destroy(new Error('ping unanswered')), this.pingTimeoutMs);
      timer.unref();
      try {
        session.ping((err) => {
          clearTimeout(timer);
          if (err) session.destroy(err);
        });
      } catch (err) {
        clearTimeout(timer);
        session.destroy(err instanceof Error ? err : new Error(String(err)));
      }
    }, this.pingIntervalMs);
    ping.unref();
    session.on('error', (err) => this.o.log.warn({ cluster: cluster.name, edgeId, err: err.message }, 'cluster control link error'));
    session.on('close', () => {
      clearInterval(ping);
      socket.destroy();
      if (table.get(edgeId) === link) table.delete(edgeId);
      if (table.size === 0 && this.links.get(cluster.id) === table) this.links.delete(cluster.id);
      this.o.log.info({ cluster: cluster.name, edgeId, upMs: Date.now() - link.since }, 'cluster control link closed');
    });
    const waiting = this.waiters.get(cluster.id);
    if (waiting) for (const w of waiting) w();
  }

  /** The newest open link of a cluster. */
  private pick(clusterId: string): Link | undefined {
    let best: Link | undefined;
    for (const l of this.links.get(clusterId)?.values() ?? []) {
      if (l.session.closed || l.session.destroyed) continue;
      if (!best || l.since > best.since) best = l;
    }
    return best;
  }

  /** Waits up to `waitForLinkMs` for a link of the cluster (a re-dial in progress), else undefined. */
  private async awaitLink(clusterId: string): Promise<Link | undefined> {
    const now = this.pick(clusterId);
    if (now || this.closed || this.waitForLinkMs <= 0) return now;
    let set = this.waiters.get(clusterId);
    if (!set) this.waiters.set(clusterId, (set = new Set()));
    const waiters = set;
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    const timer = setTimeout(wake, this.waitForLinkMs);
    waiters.add(wake);
    try {
      await woken;
    } finally {
      clearTimeout(timer);
      waiters.delete(wake);
      if (waiters.size === 0) this.waiters.delete(clusterId);
    }
    return this.pick(clusterId);
  }

  /**
   * The control link's session manager for an outbound-only cluster (connect-node's
   * NodeHttp2ClientSessionManager): each request goes out on the cluster's newest link. No link → UNAVAILABLE
   * with a reason that names it, which the control link turns into `cluster_unavailable`.
   */
  sessionManager(cluster: Cluster): {
    authority: string;
    request(method: string, path: string, headers: OutgoingHttpHeaders, options: Omit<ClientSessionRequestOptions, 'signal'>): Promise<ClientHttp2Stream>;
    notifyResponseByteRead(stream: ClientHttp2Stream): void;
  } {
    return {
      authority: `http://${encodeURIComponent(cluster.id)}.link.invalid`,
      request: async (method, path, headers, options) => {
        for (let tries = 0; tries < 2; tries++) {
          const link = await this.awaitLink(cluster.id);
          if (!link) break;
          try {
            return link.session.request({ ...headers, [h2.HTTP2_HEADER_METHOD]: method, [h2.HTTP2_HEADER_PATH]: path }, options);
          } catch (err) {
            // The link closed between the pick and the request: the next newest (or a re-dial) may take it.
            if (!(link.session.closed || link.session.destroyed)) throw err;
          }
        }
        throw noLinkOpen(cluster.name);
      },
      notifyResponseByteRead: () => undefined,
    };
  }

  /**
   * Shutdown, first step: refuse new links and close the open ones gracefully (calls in flight finish, new ones
   * fail UNAVAILABLE); each session ends once its last stream does, and the HTTP server can then close.
   */
  drain(): void {
    this.closed = true;
    for (const table of this.links.values()) for (const l of table.values()) l.session.close();
    for (const set of this.waiters.values()) for (const w of set) w();
  }

  /** Shutdown, last step: cut whatever is still open. */
  closeAll(): void {
    this.closed = true;
    for (const table of this.links.values()) for (const l of table.values()) l.session.destroy();
    this.links.clear();
    for (const set of this.waiters.values()) for (const w of set) w();
  }
}
