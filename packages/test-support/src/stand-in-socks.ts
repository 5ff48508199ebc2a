// A small SOCKS5 proxy (RFC 1928, CONNECT only) with username/password auth (RFC 1929) for a stand-in internet in
// tests: it stands for a customer's egress proxy. Every tunnel it opens is reported (target and address type), so
// a test can see that traffic went through it, and every refused login too.

import { connect, createServer, type Server } from 'node:net';

export interface StandInSocksOptions {
  address: string;
  port: number;
  username: string;
  password: string;
  /** names the proxy resolves itself (ATYP=domain); anything else is dialled as given */
  zone?: Record<string, string>;
  onEvent?: (e: { event: 'tunnel'; target: string; atyp: number } | { event: 'auth-failed' }) => void;
}

export function serveStandInSocks(opts: StandInSocksOptions): Promise<Server> {
  const server = createServer((s) => {
    s.on('error', () => s.destroy());
    s.setTimeout(10_000, () => s.destroy());
    let stage = 0;
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.length > 1024) return void s.destroy();
      if (stage === 0 && buf.length >= 2 && buf.length >= 2 + buf[1]!) {
        const methods = [...buf.subarray(2, 2 + buf[1]!)];
        buf = buf.subarray(2 + buf[1]!);
        if (!methods.includes(2)) return void s.end(Buffer.from([5, 0xff]));
        s.write(Buffer.from([5, 2]));
        stage = 1;
      }
      if (stage === 1 && buf.length >= 2 && buf.length >= 3 + buf[1]! && buf.length >= 3 + buf[1]! + buf[2 + buf[1]!]!) {
        const u = buf.subarray(2, 2 + buf[1]!).toString();
        const plen = buf[2 + buf[1]!]!;
        const pw = buf.subarray(3 + buf[1]!, 3 + buf[1]! + plen).toString();
        buf = buf.subarray(3 + buf[1]! + plen);
        if (u !== opts.username || pw !== opts.password) {
          opts.onEvent?.({ event: 'auth-failed' });
          return void s.end(Buffer.from([1, 1]));
        }
        s.write(Buffer.from([1, 0]));
        stage = 2;
      }
      if (stage === 2 && buf.length >= 5) {
        const atyp = buf[3]!;
        const len = atyp === 1 ? 10 : atyp === 3 ? 7 + buf[4]! : -1;
        if (len < 0) return void s.destroy();
        if (buf.length < len) return;
        const host = atyp === 1 ? [...buf.subarray(4, 8)].join('.') : buf.subarray(5, 5 + buf[4]!).toString();
        const port = buf.readUInt16BE(len - 2);
        stage = 3;
        s.off('data', onData);
        s.setTimeout(0);
        opts.onEvent?.({ event: 'tunnel', target: `${host}:${port}`, atyp });
        const up = connect({ host: opts.zone?.[host] ?? host, port }, () => {
          s.write(Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
          if (buf.length > len) up.write(buf.subarray(len));
          s.pipe(up).pipe(s);
        });
        up.on('error', () => s.destroy());
        s.on('close', () => up.destroy());
      }
    };
    s.on('data', onData);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.address, () => resolve(server));
  });
}
