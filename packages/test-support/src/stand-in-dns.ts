// A tiny authoritative DNS server over UDP for a stand-in internet in tests: A records for a fixed zone (exact
// names and `*.suffix` wildcards below the suffix, never the apex), NXDOMAIN for anything else. Every query it
// receives is reported, so a test can prove which names never left the node.

import { createSocket, type Socket } from 'node:dgram';

export interface StandInDnsOptions {
  address: string;
  port?: number;
  /** `name → IPv4`; a key `*.example.test` answers every name below example.test */
  zone: Record<string, string>;
  onQuery?: (q: { name: string; qtype: number; from: string }) => void;
}

export function lookupZone(zone: Record<string, string>, name: string): string | undefined {
  if (zone[name]) return zone[name];
  const wild = Object.keys(zone)
    .filter((k) => k.startsWith('*.') && name.endsWith(k.slice(1)))
    .sort((a, b) => b.length - a.length)[0];
  return wild ? zone[wild] : undefined;
}

/** Parses the one question (bounded: a malformed query is ignored) and answers it. */
export function answerQuery(msg: Buffer, zone: Record<string, string>): { reply: Buffer; name: string; qtype: number } | undefined {
  if (msg.length < 17 || msg.length > 512) return undefined;
  let p = 12;
  const labels: string[] = [];
  while (p < msg.length && msg[p] !== 0) {
    const len = msg[p]!;
    if (len > 63 || p + 1 + len >= msg.length) return undefined;
    labels.push(msg.subarray(p + 1, p + 1 + len).toString('latin1'));
    p += 1 + len;
  }
  if (p + 5 > msg.length) return undefined;
  const qtype = msg.readUInt16BE(p + 1);
  const qEnd = p + 5;
  const name = labels.join('.').toLowerCase();
  const ip = lookupZone(zone, name);
  const head = Buffer.alloc(12);
  head.writeUInt16BE(msg.readUInt16BE(0), 0);
  head.writeUInt16BE(0x8400 | (msg[2]! & 1 ? 0x0100 : 0) | (ip ? 0 : 3), 2);
  head.writeUInt16BE(1, 4);
  const a = ip !== undefined && qtype === 1;
  head.writeUInt16BE(a ? 1 : 0, 6);
  const answer = a ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, ...ip.split('.').map(Number)]) : Buffer.alloc(0);
  return { reply: Buffer.concat([head, msg.subarray(12, qEnd), answer]), name, qtype };
}

export function serveStandInDns(opts: StandInDnsOptions): Promise<Socket> {
  const sock = createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const r = answerQuery(msg, opts.zone);
    if (!r) return;
    opts.onQuery?.({ name: r.name, qtype: r.qtype, from: rinfo.address });
    sock.send(r.reply, rinfo.port, rinfo.address);
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(opts.port ?? 53, opts.address, () => resolve(sock));
  });
}
