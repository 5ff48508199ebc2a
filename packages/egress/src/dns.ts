// The node's filtering DNS resolver (UDP and TCP). nft redirects a sandbox's port-53 traffic here when its
// policy denies all; only names the policy allows are forwarded to the upstream resolver, everything else is
// answered REFUSED on the node, so a query for a denied name never leaves it (no exfiltration through the
// query name). Queries are parsed with fixed bounds, one question each, and rate limited per sandbox.

import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { dnsAllowed, type EgressPolicy } from './policy.js';

const MAX_QUERY = 1232;
const MAX_ANSWER = 4096;

export interface DnsQuestion {
  id: number;
  name: string;
  qtype: number;
  /** end of the question section in the query */
  end: number;
}

/** Parse the single question of a standard query; undefined for anything else (no compression in queries). */
export function parseQuery(msg: Buffer): DnsQuestion | undefined {
  if (msg.length < 12 || msg.length > MAX_QUERY) return undefined;
  const flags = msg.readUInt16BE(2);
  if (flags & 0x8000 || ((flags >> 11) & 0xf) !== 0) return undefined; // a response, or not QUERY
  if (msg.readUInt16BE(4) !== 1 || msg.readUInt16BE(6) !== 0 || msg.readUInt16BE(8) !== 0) return undefined;
  let p = 12;
  const labels: string[] = [];
  let total = 0;
  while (true) {
    if (p >= msg.length) return undefined;
    const len = msg[p];
    if (len === 0) break;
    if (len > 63) return undefined;
    total += len + 1;
    if (total > 254 || p + 1 + len > msg.length) return undefined;
    labels.push(msg.subarray(p + 1, p + 1 + len).toString('latin1'));
    p += 1 + len;
  }
  p += 1;
  if (p + 4 > msg.length) return undefined;
  return { id: msg.readUInt16BE(0), name: labels.join('.').toLowerCase(), qtype: msg.readUInt16BE(p), end: p + 4 };
}

/** An answerless reply carrying `rcode` (5 REFUSED, 1 FORMERR, 2 SERVFAIL), echoing the question when known. */
export function errorReply(msg: Buffer, rcode: number): Buffer {
  const q = parseQuery(msg);
  const head = Buffer.alloc(12);
  head.writeUInt16BE(msg.length >= 2 ? msg.readUInt16BE(0) : 0, 0);
  const rd = msg.length >= 3 ? msg[2] & 1 : 0;
  head.writeUInt16BE(0x8000 | (rd << 8) | 0x0080 | rcode, 2);
  if (!q) return head;
  head.writeUInt16BE(1, 4);
  return Buffer.concat([head, msg.subarray(12, q.end)]);
}

export interface DnsFilterOptions {
  lookup: (srcIp: string) => { sandboxId: string; policy: EgressPolicy } | undefined;
  /** upstream resolver address (host:53) the allowed queries are forwarded to */
  upstream: { host: string; port: number };
  /** queries per second per sandbox before excess is dropped */
  ratePerSecond?: number;
  timeoutMs?: number;
  /** TCP connections one sandbox may hold open to the resolver at once (default 16); more are cut at accept */
  maxTcpPerSandbox?: number;
  /** the listening sockets do not keep the process alive */
  unref?: boolean;
  onQuery?: (q: { sandboxId: string; name: string; allowed: boolean }) => void;
}

export class DnsFilter {
  private udp?: UdpSocket;
  private tcp?: Server;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly tcpOpen = new Map<string, number>();
  port = 0;

  constructor(private readonly opts: DnsFilterOptions) {}

  /**
   * Listens for UDP and TCP on one port. With `port` 0 the UDP socket picks it, and that number may be taken in TCP's
   * separate port space (another listener of this node, or a connection from the gateway address to a sandbox): then
   * both are given up and another port is tried, a few times.
   */
  async listen(port: number, host = '0.0.0.0'): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.listenOnce(port, host);
      } catch (err) {
        if (port !== 0 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 8) throw err;
      }
    }
  }

  private async listenOnce(port: number, host: string): Promise<number> {
    const udp = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, host, () => resolve());
    });
    const bound = udp.address().port;
    const tcp = createServer((s) => this.serveTcp(s));
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(bound, host, () => resolve());
      });
    } catch (err) {
      udp.close();
      throw err;
    }
    this.port = bound;
    udp.on('message', (msg, rinfo) => {
      void this.answer(msg, rinfo.address).then((reply) => {
        if (reply) udp.send(reply, rinfo.port, rinfo.address);
      });
    });
    this.udp = udp;
    this.tcp = tcp;
    if (this.opts.unref) {
      udp.unref();
      tcp.unref();
    }
    return this.port;
  }

  /** Drops what is kept for a sandbox that is gone (its rate bucket), so per-sandbox state ends with it. */
  forget(sandboxId: string): void {
    this.buckets.delete(sandboxId);
  }

  async close(): Promise<void> {
    this.udp?.close();
    await new Promise<void>((r) => (this.tcp ? this.tcp.close(() => r()) : r()));
  }

  private allowRate(id: string): boolean {
    const rate = this.opts.ratePerSecond ?? 200;
    const now = Date.now();
    const b = this.buckets.get(id) ?? { tokens: rate, at: now };
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    this.buckets.set(id, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** The reply for one query from `src`, or undefined to drop it (unknown source, over the rate). */
  async answer(msg: Buffer, src: string): Promise<Buffer | undefined> {
    const sb = this.opts.lookup(src);
    if (!sb || !this.allowRate(sb.sandboxId)) return undefined;
    const q = parseQuery(msg);
    if (!q) return errorReply(msg, 1);
    const allowed = dnsAllowed(sb.policy, q.name);
    this.opts.onQuery?.({ sandboxId: sb.sandboxId, name: q.name, allowed });
    if (!allowed) return errorReply(msg, 5);
    return (await this.forward(msg, q.id)) ?? errorReply(msg, 2);
  }

  private forward(msg: Buffer, id: number): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const s = createSocket('udp4');
      const done = (r?: Buffer): void => {
        clearTimeout(timer);
        s.close();
        resolve(r);
      };
      const timer = setTimeout(() => done(), this.opts.timeoutMs ?? 2000);
      s.on('error', () => done());
      s.on('message', (reply, rinfo) => {
        // Only the upstream's answer to this query id is relayed.
        if (rinfo.address !== this.opts.upstream.host || reply.length < 12 || reply.length > MAX_ANSWER || reply.readUInt16BE(0) !== id) return;
        done(reply);
      });
      s.send(msg, this.opts.upstream.port, this.opts.upstream.host);
    });
  }

  private serveTcp(s: Socket): void {
    const src = s.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    // Unknown sources get nothing, and one sandbox cannot hold more than a few sockets of the node's resolver.
    const sb = this.opts.lookup(src);
    const held = sb ? (this.tcpOpen.get(sb.sandboxId) ?? 0) : 0;
    if (!sb || held >= (this.opts.maxTcpPerSandbox ?? 16)) {
      s.destroy();
      return;
    }
    this.tcpOpen.set(sb.sandboxId, held + 1);
    s.once('close', () => {
      const n = (this.tcpOpen.get(sb.sandboxId) ?? 1) - 1;
      if (n <= 0) this.tcpOpen.delete(sb.sandboxId);
      else this.tcpOpen.set(sb.sandboxId, n);
    });
    let buf = Buffer.alloc(0);
    let busy = false;
    let served = 0;
    s.setTimeout(5000, () => s.destroy());
    s.on('error', () => s.destroy());
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (len < 12 || len > MAX_QUERY) {
          s.destroy();
          return;
        }
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        if (++served > 100) {
          s.destroy();
          return;
        }
        const reply = await this.answer(Buffer.from(msg), src);
        if (!reply) {
          s.destroy();
          return;
        }
        const lenBuf = Buffer.alloc(2);
        lenBuf.writeUInt16BE(reply.length);
        s.write(Buffer.concat([lenBuf, reply]));
      }
      busy = false;
    };
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length > 2 + MAX_QUERY + 2 + MAX_QUERY) {
        s.destroy();
        return;
      }
      void pump();
    });
  }

  address(): AddressInfo | undefined {
    return this.tcp?.address() as AddressInfo | undefined;
  }
}
