// Outbound legs of the egress proxy: a direct TCP connect, or a tunnel through the customer's SOCKS5 (RFC 1928 /
// RFC 1929) or HTTP CONNECT proxy. The customer's proxy is outside our trust too: its replies are read with caps
// and deadlines, and a failure fails closed (no fallback to a direct connection).

import { readFileSync } from 'node:fs';
import { connect, isIPv4, type Socket } from 'node:net';
import type { EgressProxyTarget } from './policy.js';
import { readPrefix } from './wire.js';

export interface DialTarget {
  /** the address to reach (already decided and, for hostname allows, resolved by the node) */
  ip: string;
  port: number;
  /** set for hostname-matched flows: a SOCKS5 proxy gets it as ATYP=domain (remote DNS), as E2B does */
  hostname?: string;
}

export function connectTcp(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect ${host}:${port} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.off('error', onErr);
      resolve(s);
    });
    const onErr = (e: Error): void => {
      clearTimeout(timer);
      reject(e);
    };
    s.once('error', onErr);
  });
}

async function socks5(proxy: EgressProxyTarget, t: DialTarget, timeoutMs: number): Promise<Socket> {
  const s = await connectTcp(proxy.host, proxy.port, timeoutMs);
  try {
    const auth = proxy.username !== undefined;
    s.write(Buffer.from(auth ? [5, 1, 2] : [5, 1, 0]));
    const m = await readPrefix(s, 2, timeoutMs, (b) => (b.length >= 2 ? 2 : 'more'));
    if (m[0] !== 5 || m[1] !== (auth ? 2 : 0)) throw new Error('SOCKS5 proxy refused the authentication method');
    if (auth) {
      const u = Buffer.from(proxy.username!);
      const p = Buffer.from(proxy.password ?? '');
      s.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
      const a = await readPrefix(s, 2, timeoutMs, (b) => (b.length >= 2 ? 2 : 'more'));
      if (a[1] !== 0) throw new Error('SOCKS5 proxy rejected the credentials');
    }
    const port = Buffer.alloc(2);
    port.writeUInt16BE(t.port);
    const addr = t.hostname
      ? Buffer.concat([Buffer.from([3, Buffer.byteLength(t.hostname)]), Buffer.from(t.hostname)])
      : Buffer.from([1, ...t.ip.split('.').map(Number)]);
    s.write(Buffer.concat([Buffer.from([5, 1, 0]), addr, port]));
    const r = await readPrefix(s, 262, timeoutMs, (b) => {
      if (b.length < 5) return 'more';
      const len = b[3] === 1 ? 10 : b[3] === 4 ? 22 : b[3] === 3 ? 7 + b[4] : -1;
      if (len < 0) return 'bad';
      return b.length >= len ? len : 'more';
    });
    if (r[0] !== 5 || r[1] !== 0) throw new Error(`SOCKS5 proxy refused the connection (reply ${r[1]})`);
    const len = r[3] === 1 ? 10 : r[3] === 4 ? 22 : 7 + r[4];
    if (r.length > len) s.unshift(r.subarray(len));
    return s;
  } catch (e) {
    s.destroy();
    throw e;
  }
}

async function httpConnect(proxy: EgressProxyTarget, t: DialTarget, timeoutMs: number): Promise<Socket> {
  const s = await connectTcp(proxy.host, proxy.port, timeoutMs);
  try {
    const authority = `${t.hostname ?? t.ip}:${t.port}`;
    const auth = proxy.username !== undefined ? `Proxy-Authorization: Basic ${Buffer.from(`${proxy.username}:${proxy.password ?? ''}`).toString('base64')}\r\n` : '';
    s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`);
    const head = await readPrefix(s, 8192, timeoutMs, (b) => {
      const i = b.indexOf('\r\n\r\n');
      return i >= 0 ? i + 4 : 'more';
    });
    const end = head.indexOf('\r\n\r\n') + 4;
    if (!/^HTTP\/1\.[01] 2\d\d /.test(head.subarray(0, 16).toString('latin1'))) {
      throw new Error(`CONNECT proxy refused: ${head.subarray(0, head.indexOf('\r\n')).toString('latin1').slice(0, 100)}`);
    }
    if (head.length > end) s.unshift(head.subarray(end));
    return s;
  } catch (e) {
    s.destroy();
    throw e;
  }
}

/** Open the outbound leg for an allowed flow: direct, or through the sandbox's chained proxy. */
export function dial(t: DialTarget, proxy: EgressProxyTarget | undefined, timeoutMs: number): Promise<Socket> {
  if (!proxy) return connectTcp(t.ip, t.port, timeoutMs);
  return proxy.kind === 'socks5' ? socks5(proxy, t, timeoutMs) : httpConnect(proxy, t, timeoutMs);
}

/**
 * The destination a redirected connection was originally sent to, from the kernel's conntrack table of the
 * netns this process runs in (nft `redirect` rewrites it; Node has no SO_ORIGINAL_DST). The table is written by
 * the kernel, not by the sandbox; the read is capped all the same.
 */
export async function conntrackOriginalDst(srcIp: string, srcPort: number, localPort: number): Promise<{ ip: string; port: number } | undefined> {
  if (!isIPv4(srcIp)) return undefined;
  // One synchronous read: procfs answers from memory, and the thread-pool round trips of an async read cost
  // more than the read itself at the table sizes of a node netns.
  const text = readFileSync('/proc/net/nf_conntrack', 'latin1');
  const want = ` src=${srcIp} `;
  const sport = ` sport=${srcPort} `;
  for (const line of text.split('\n')) {
    if (!line.includes(' tcp ') || !line.includes(want) || !line.includes(sport)) continue;
    const m = / src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) (?:\[\w+\] )?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)/.exec(line);
    if (!m || m[1] !== srcIp || Number(m[3]) !== srcPort || Number(m[7]) !== localPort) continue;
    return { ip: m[2], port: Number(m[4]) };
  }
  return undefined;
}
