// The node egress proxy. nft redirects a sandbox's TCP 80/443 (and, with an egressProxy, all its TCP) here.
// The sandbox is known by its source address (lookup callback); the original destination comes from conntrack.
// Hostnames are judged on the traffic itself (HTTP Host, TLS SNI) and, when it is the name that allows a flow,
// the proxy connects to the address IT resolves for that name, never the one the sandbox aimed at.
// For hosts with transform rules it terminates TLS with the sandbox's CA and rewrites each request's headers.

import { Resolver } from 'node:dns/promises';
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer, isIPv4, type AddressInfo, type Server, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { connect as tlsConnect, rootCertificates, TLSSocket } from 'node:tls';
import type { SandboxCa } from './ca.js';
import {
  cidrContains,
  decide,
  hostnameAllowed,
  normaliseHostname,
  parseNetworkPolicy,
  type Cidr,
  type EgressPolicy,
  type EgressProxyTarget,
  type PlaceholderKind,
  resolvePlaceholders,
  rulesFor,
  type Verdict,
} from './policy.js';
import { conntrackOriginalDst, dial, type DialTarget } from './upstream.js';
import { clientHelloComplete, HEAD_MAX_BYTES, HELLO_MAX_BYTES, httpHeadComplete, parseHttpHost, parseSni, readPrefix } from './wire.js';

/** The proxy's listening ports: see nft.ts for which flows nft sends to which. */
export interface ProxyPorts {
  http: number;
  tls: number;
  tunnel: number;
  httpToDenied: number;
  tlsToDenied: number;
}

export interface SandboxEgress {
  sandboxId: string;
  policy: EgressPolicy;
  /** present when the policy has transform rules: terminates TLS for those hosts */
  ca?: SandboxCa;
  /** the sandbox's team: whose secrets its placeholders name */
  teamId?: string;
}

export interface EgressDecisionLog {
  sandboxId: string;
  kind: 'http' | 'tls' | 'tunnel';
  dst: string;
  hostname?: string;
  verdict: Verdict['reason'] | 'too-many-connections' | 'no-sandbox' | 'no-original-dst' | 'bad-prefix' | 'resolve-failed' | 'forbidden-address' | 'upstream-failed';
  allow: boolean;
}

export interface EgressProxyOptions {
  /** who is behind this source address (the sandbox's veth address), and its current policy */
  lookup: (srcIp: string) => SandboxEgress | undefined;
  /** secret / workload-token values for placeholders; never written anywhere by the proxy */
  resolveSecret?: (sandbox: SandboxEgress, kind: PlaceholderKind, name: string) => Promise<string>;
  /** DNS servers the proxy resolves allowed hostnames with (default: the system's) */
  upstreamDns?: string[];
  /** extra CAs trusted for upstream TLS when terminating (tests); the system store otherwise. A function is asked per connection. */
  upstreamCa?: string[] | (() => string[] | undefined);
  /** addresses no policy can reach (node-internal ranges, metadata services) */
  forbiddenCidrs?: string[];
  /** original destination of a redirected connection (default: conntrack) */
  originalDst?: (srcIp: string, srcPort: number, localPort: number) => Promise<{ ip: string; port: number } | undefined>;
  helloTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** open connections one sandbox may hold through the proxy at once (default 1024); more are refused */
  maxConnectionsPerSandbox?: number;
  idleTimeoutMs?: number;
  onDecision?: (d: EgressDecisionLog) => void;
  /** the listening sockets do not keep the process alive (a node agent that stops by other means) */
  unref?: boolean;
}

/** An open connection the proxy let through: re-judged when its sandbox's policy changes. */
interface Tracked {
  /** the address and port the flow reaches (for a name-allowed flow to a denied address: the one the proxy resolved) */
  ip: string;
  port: number;
  hostname?: string;
  /** the sandbox's side; destroying it ends the flow (the other side follows) */
  client: Socket;
  upstream?: Socket;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

interface MitmContext {
  sb: SandboxEgress;
  host: string;
  ip: string;
  port: number;
  tls: boolean;
}

export class EgressProxy {
  private readonly servers: Server[] = [];
  private readonly resolver = new Resolver({ timeout: 2000, tries: 1 });
  private readonly forbidden: Cidr[];
  private readonly dnsCache = new Map<string, { ip: string; until: number }>();
  private readonly open = new Map<string, number>();
  /** open allowed flows per source address; bounded by maxConnectionsPerSandbox */
  private readonly flows = new Map<string, Set<Tracked>>();
  private readonly mitmCtx = new WeakMap<Socket, MitmContext>();
  private readonly mitm = createHttpServer({ maxHeaderSize: 16 * 1024, headersTimeout: 10_000, requestTimeout: 60_000 }, (req, res) => {
    void this.forwardTransformed(req, res);
  });
  readonly ports: ProxyPorts = { http: 0, tls: 0, tunnel: 0, httpToDenied: 0, tlsToDenied: 0 };

  constructor(private readonly opts: EgressProxyOptions) {
    if (opts.upstreamDns) this.resolver.setServers(opts.upstreamDns);
    this.forbidden = (opts.forbiddenCidrs ?? ['127.0.0.0/8', '0.0.0.0/8', '169.254.0.0/16']).length
      ? parseNetworkPolicy({ denyOut: opts.forbiddenCidrs ?? ['127.0.0.0/8', '0.0.0.0/8', '169.254.0.0/16'] }).denyCidrs
      : [];
    this.mitm.on('clientError', (_e, s) => s.destroy());
  }

  /** Listen on the three interception ports (0 = any free one); returns the ports bound. */
  async listen(ports: Partial<ProxyPorts> = {}, host = '0.0.0.0'): Promise<ProxyPorts> {
    for (const name of ['http', 'tls', 'tunnel', 'httpToDenied', 'tlsToDenied'] as const) {
      const kind = name === 'httpToDenied' ? 'http' : name === 'tlsToDenied' ? 'tls' : name;
      const server = createServer({ pauseOnConnect: true, noDelay: true }, (s) => {
        s.on('error', () => s.destroy());
        this.handle(kind, s, name.endsWith('ToDenied')).catch(() => s.destroy());
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(ports[name] ?? 0, host, () => resolve());
      });
      this.ports[name] = (server.address() as AddressInfo).port;
      if (this.opts.unref) server.unref();
      this.servers.push(server);
    }
    return { ...this.ports };
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => { s.close(() => r()); (s as Server & { closeAllConnections?: () => void }).closeAllConnections?.(); })));
    this.mitm.close();
  }

  private log(d: EgressDecisionLog): void {
    this.opts.onDecision?.(d);
  }

  private track(src: string, t: Tracked): void {
    let set = this.flows.get(src);
    if (!set) this.flows.set(src, (set = new Set()));
    set.add(t);
    t.client.once('close', () => {
      const cur = this.flows.get(src);
      cur?.delete(t);
      if (cur && cur.size === 0) this.flows.delete(src);
    });
  }

  /**
   * Re-judges every open flow from `srcIp` against the sandbox's current policy (call it after a live update)
   * and cuts the ones it no longer allows, so an update also applies to connections already open. Returns how
   * many were cut. A source with no sandboxes any more loses them all.
   */
  recheck(srcIp: string): number {
    const set = this.flows.get(srcIp);
    if (!set) return 0;
    const current = this.opts.lookup(srcIp);
    let cut = 0;
    for (const t of [...set]) {
      if (current && decide(current.policy, t.ip, t.port, t.hostname).allow) continue;
      set.delete(t);
      t.client.destroy();
      t.upstream?.destroy();
      cut++;
    }
    if (set.size === 0) this.flows.delete(srcIp);
    return cut;
  }

  /** Open flows from a source address (tests, metrics). */
  openFlows(srcIp: string): number {
    return this.flows.get(srcIp)?.size ?? 0;
  }

  /**
   * `toDenied`: nft sent this flow here because its destination address is denied (and not allowed), so only an
   * allowed name can let it through and the original address is never needed: no conntrack lookup.
   */
  private async handle(kind: 'http' | 'tls' | 'tunnel', s: Socket, toDenied: boolean): Promise<void> {
    const src = s.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    const sb = this.opts.lookup(src);
    const base = { sandboxId: sb?.sandboxId ?? '', kind, dst: '' };
    if (!sb) {
      this.log({ ...base, verdict: 'no-sandbox', allow: false });
      s.destroy();
      return;
    }
    const orig = toDenied
      ? { ip: '', port: kind === 'tls' ? 443 : 80 }
      : await (this.opts.originalDst ?? conntrackOriginalDst)(src, s.remotePort ?? 0, s.localPort ?? 0);
    if (!orig) {
      this.log({ ...base, verdict: 'no-original-dst', allow: false });
      s.destroy();
      return;
    }
    // A sandbox cannot exhaust the node's sockets or memory with connections it never completes.
    const count = (this.open.get(sb.sandboxId) ?? 0) + 1;
    if (count > (this.opts.maxConnectionsPerSandbox ?? 1024)) {
      this.log({ ...base, verdict: 'too-many-connections', allow: false });
      s.destroy();
      return;
    }
    this.open.set(sb.sandboxId, count);
    s.once('close', () => {
      const n = (this.open.get(sb.sandboxId) ?? 1) - 1;
      if (n <= 0) this.open.delete(sb.sandboxId);
      else this.open.set(sb.sandboxId, n);
    });
    base.dst = toDenied ? `(denied):${orig.port}` : `${orig.ip}:${orig.port}`;
    let prefix = Buffer.alloc(0);
    let hostname: string | undefined;
    const timeout = this.opts.helloTimeoutMs ?? 5000;
    if (kind !== 'tunnel') {
      try {
        prefix = kind === 'tls'
          ? await readPrefix(s, HELLO_MAX_BYTES, timeout, clientHelloComplete)
          : await readPrefix(s, HEAD_MAX_BYTES, timeout, httpHeadComplete);
      } catch {
        // Garbage, oversize or slow: no name can be trusted, so nothing is forwarded.
        this.log({ ...base, verdict: 'bad-prefix', allow: false });
        if (kind === 'http' && !s.destroyed) s.end(deniedResponse(400, 'egress_bad_request', 'malformed, oversize or incomplete request head'));
        else s.destroy();
        return;
      }
      hostname = kind === 'tls' ? parseSni(prefix) : parseHttpHost(prefix);
    }
    // Re-read the policy after the (possibly slow) prefix: a live update applies to this new connection.
    const current = this.opts.lookup(src);
    if (!current) {
      // The sandbox went away while its first bytes were awaited: nothing to judge by.
      this.log({ ...base, verdict: 'no-sandbox', allow: false });
      s.destroy();
      return;
    }
    const verdict: Verdict = toDenied
      ? hostname !== undefined && hostnameAllowed(current.policy, hostname)
        ? { allow: true, reason: 'host-allowed', connectTo: 'hostname' }
        : { allow: false, reason: 'host-not-allowed' }
      : decide(current.policy, orig.ip, orig.port, hostname);
    if (!verdict.allow) {
      this.log({ ...base, hostname, verdict: verdict.reason, allow: false });
      if (kind === 'http') s.end(deniedResponse(403, 'egress_denied', `egress to ${hostname ?? orig.ip} is not allowed by the sandbox's network policy`));
      else s.destroy();
      return;
    }
    let ip = orig.ip;
    if (verdict.connectTo === 'hostname') {
      const resolved = await this.resolve(hostname!);
      if (!resolved) {
        this.log({ ...base, hostname, verdict: 'resolve-failed', allow: false });
        if (kind === 'http') s.end(deniedResponse(502, 'egress_resolve_failed', `could not resolve ${hostname}`));
        else s.destroy();
        return;
      }
      ip = resolved;
    }
    if (this.forbidden.some((c) => cidrContains(c, ip))) {
      this.log({ ...base, hostname, verdict: 'forbidden-address', allow: false });
      s.destroy();
      return;
    }
    const rules = hostname ? rulesFor(current.policy, hostname) : undefined;
    if (rules && kind !== 'tunnel') {
      if (kind === 'tls' && !current.ca) {
        // Transforms cannot be applied without terminating TLS: fail closed rather than send it unmodified.
        this.log({ ...base, hostname, verdict: 'upstream-failed', allow: false });
        s.destroy();
        return;
      }
      this.log({ ...base, hostname, verdict: verdict.reason, allow: true });
      this.track(src, { ip, port: orig.port, hostname, client: s });
      const ctx: MitmContext = { sb: current, host: hostname!, ip, port: orig.port, tls: kind === 'tls' };
      // A plain stream (not the net.Socket) so the bytes already read are replayed: TLS and the HTTP parser
      // would otherwise read the socket's handle directly and skip them.
      const stream = replayStream(s, prefix);
      if (kind === 'tls') {
        const tlsSock = new TLSSocket(stream as unknown as Socket, { isServer: true, secureContext: await current.ca!.contextFor(hostname!) });
        tlsSock.on('error', () => s.destroy());
        this.mitmCtx.set(tlsSock, ctx);
        this.mitm.emit('connection', tlsSock);
      } else {
        this.mitmCtx.set(stream as unknown as Socket, ctx);
        this.mitm.emit('connection', stream);
      }
      return;
    }
    let up: Socket;
    try {
      up = await this.dialOut({ ip, port: orig.port, hostname: verdict.connectTo === 'hostname' ? hostname : undefined }, current.policy.egressProxy);
    } catch {
      this.log({ ...base, hostname, verdict: 'upstream-failed', allow: false });
      if (kind === 'http') s.end(deniedResponse(502, 'egress_upstream_failed', 'could not reach the destination'));
      else s.destroy();
      return;
    }
    this.log({ ...base, hostname, verdict: verdict.reason, allow: true });
    if (s.destroyed) {
      up.destroy();
      return;
    }
    this.track(src, { ip, port: orig.port, hostname, client: s, upstream: up });
    splice(s, up, prefix, this.opts.idleTimeoutMs ?? 300_000);
  }

  /**
   * The outbound leg, direct or through the sandbox's chained proxy. The chained proxy's address is the tenant's
   * too: it is resolved by the node and held to the same forbidden ranges as any destination, so an egressProxy
   * of `127.0.0.1:<port>` or a name resolving into the node's network never gets a byte from the node.
   */
  private async dialOut(t: DialTarget, proxy: EgressProxyTarget | undefined): Promise<Socket> {
    const timeout = this.opts.connectTimeoutMs ?? 5000;
    if (!proxy) return dial(t, undefined, timeout);
    const ip = isIPv4(proxy.host) ? proxy.host : await this.resolve(proxy.host);
    if (!ip || this.forbidden.some((c) => cidrContains(c, ip))) throw new Error('the egress proxy address is not reachable from this node');
    return dial(t, { ...proxy, host: ip }, timeout);
  }

  /**
   * The address the proxy itself resolves for an allowed name, cached for the record's TTL (at most 60 s, at
   * most 4096 names) so a hostname-allowed connection does not pay a DNS round trip each time.
   */
  private async resolve(hostname: string): Promise<string | undefined> {
    const hit = this.dnsCache.get(hostname);
    if (hit && hit.until > Date.now()) return hit.ip;
    try {
      const addrs = await this.resolver.resolve4(hostname, { ttl: true });
      const a = addrs.find((r) => isIPv4(r.address) && !this.forbidden.some((c) => cidrContains(c, r.address)));
      if (!a) return undefined;
      if (this.dnsCache.size >= 4096) this.dnsCache.clear();
      this.dnsCache.set(hostname, { ip: a.address, until: Date.now() + Math.min(a.ttl, 60) * 1000 });
      return a.address;
    } catch {
      return undefined;
    }
  }

  /** One request through a terminated connection: same host only, headers transformed in rule order. */
  private async forwardTransformed(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const ctx = this.mitmCtx.get(req.socket);
    const reqHost = normaliseHostname((req.headers.host ?? '').replace(/:\d+$/, ''));
    if (!ctx || reqHost !== ctx.host) {
      // Another vhost on the same connection would receive credentials meant for ctx.host.
      res.writeHead(421, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'egress_misdirected', message: 'request host differs from the connection host' }));
      return;
    }
    const headers: Record<string, string | string[]> = {};
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i].toLowerCase();
      if (HOP_BY_HOP.has(name)) continue;
      const prev = headers[name];
      headers[name] = prev === undefined ? req.rawHeaders[i + 1] : ([] as string[]).concat(prev, req.rawHeaders[i + 1]);
    }
    try {
      for (const t of rulesFor(ctx.sb.policy, ctx.host) ?? []) {
        for (const h of t.set) {
          headers[h.name] = await resolvePlaceholders(h.value, (kind, name) => {
            if (!this.opts.resolveSecret) throw new Error('no secret resolver');
            return this.opts.resolveSecret(ctx.sb, kind, name);
          });
        }
      }
    } catch {
      // The reason may name a secret; the sandbox only learns that the transform failed.
      res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'egress_transform_failed', message: 'a header transform could not be resolved' }));
      req.resume();
      return;
    }
    let raw: Socket;
    try {
      raw = await this.dialOut({ ip: ctx.ip, port: ctx.port, hostname: ctx.host }, ctx.sb.policy.egressProxy);
    } catch {
      res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'egress_upstream_failed', message: 'could not reach the destination' }));
      req.resume();
      return;
    }
    const extraCa = typeof this.opts.upstreamCa === 'function' ? this.opts.upstreamCa() : this.opts.upstreamCa;
    const sock: Socket = ctx.tls
      ? tlsConnect({ socket: raw, servername: ctx.host, ...(extraCa ? { ca: [...rootCertificates, ...extraCa] } : {}) })
      : raw;
    const upReq = httpRequest({ createConnection: () => sock, method: req.method, path: req.url, headers });
    upReq.setTimeout(this.opts.idleTimeoutMs ?? 300_000, () => upReq.destroy());
    upReq.on('response', (up) => {
      const out: string[] = [];
      for (let i = 0; i < up.rawHeaders.length; i += 2) {
        if (!HOP_BY_HOP.has(up.rawHeaders[i].toLowerCase())) out.push(up.rawHeaders[i], up.rawHeaders[i + 1]);
      }
      res.writeHead(up.statusCode ?? 502, out);
      up.pipe(res);
    });
    upReq.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'egress_upstream_failed', message: 'upstream request failed' }));
      else res.destroy();
    });
    req.pipe(upReq);
  }
}

function deniedResponse(status: number, code: string, message: string): string {
  const body = JSON.stringify({ code, message });
  const text = status === 403 ? 'Forbidden' : status === 400 ? 'Bad Request' : 'Bad Gateway';
  return `HTTP/1.1 ${status} ${text}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

function replayStream(s: Socket, prefix: Buffer): Duplex {
  const d = new Duplex({
    read() {
      s.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      s.write(chunk, cb);
    },
    final(cb) {
      s.end();
      cb();
    },
    destroy(err, cb) {
      s.destroy();
      cb(err);
    },
  });
  d.push(prefix);
  s.on('data', (c: Buffer) => {
    if (!d.push(c)) s.pause();
  });
  s.on('end', () => d.push(null));
  s.on('close', () => d.destroy());
  s.setTimeout(300_000, () => s.destroy());
  s.resume();
  return d;
}

function splice(a: Socket, b: Socket, prefix: Buffer, idleMs: number): void {
  a.setTimeout(idleMs, () => a.destroy());
  b.setTimeout(idleMs, () => b.destroy());
  // One side closing ends the other gracefully so what is still queued for it is delivered (destroying it
  // would cut the tail of a response); errors and the idle timeout tear both down.
  a.on('close', () => b.end());
  b.on('close', () => a.end());
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  if (prefix.length) b.write(prefix);
  forward(a, b);
  forward(b, a);
}

/**
 * Like pipe(), but lets up to 1 MiB queue before pausing the reader: with the default 16 KiB mark, a bulk
 * transfer stalls on every other chunk. Memory per direction stays bounded by the cap.
 */
function forward(from: Socket, to: Socket): void {
  from.on('data', (chunk: Buffer) => {
    to.write(chunk);
    if (to.writableLength > 1 << 20) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  });
  from.on('end', () => to.end());
  // A leg that went through a handshake (SOCKS5, CONNECT) was left paused by its bounded reader.
  from.resume();
}
