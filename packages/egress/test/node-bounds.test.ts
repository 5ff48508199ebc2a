// What a node-wide proxy and resolver must hold against one hostile sandbox, over loopback (no root, no netns):
// a live policy update cuts flows already open through the proxy; the resolver's TCP side keeps no more than a
// few sockets per sandbox and none for unknown sources; a DNS query for a denied name is answered (REFUSED), not
// dropped, so lookups fail fast.

import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { eventually } from '@cove/test-support/eventually';
import { ALL_TRAFFIC, DnsFilter, EgressProxy, parseNetworkPolicy, type EgressPolicy } from '../src/index.js';

function dnsQuery(name: string, id = 0x1234): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([head, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** Whether the socket is closed by the other side within `ms` (true) or still open (false). */
async function closedWithin(s: Socket, ms: number): Promise<boolean> {
  if (s.destroyed || s.readableEnded) return true;
  return await new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

describe('node egress services against a hostile sandbox (loopback)', () => {
  let upstream: Server;
  let upPort = 0;
  const held: Socket[] = [];
  let policy: EgressPolicy | undefined;
  const lookup = (src: string): { sandboxId: string; policy: EgressPolicy } | undefined =>
    src === '127.0.0.1' && policy ? { sandboxId: 'sbx-1', policy } : undefined;

  before(async () => {
    // An upstream that keeps every connection open and echoes.
    upstream = createServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    upstream.listen(0, '127.0.0.2');
    await once(upstream, 'listening');
    upPort = (upstream.address() as AddressInfo).port;
  });
  after(() => {
    for (const s of held) s.destroy();
    upstream.close();
  });

  it('a live update cuts open proxied flows the new policy denies, and keeps the ones it still allows', async () => {
    policy = parseNetworkPolicy({ allowOut: ['127.0.0.2'], denyOut: [ALL_TRAFFIC] });
    const proxy = new EgressProxy({
      lookup,
      forbiddenCidrs: [],
      // Loopback has no redirect: every flow "was" aimed at the upstream.
      originalDst: async () => ({ ip: '127.0.0.2', port: upPort }),
    });
    const ports = await proxy.listen({}, '127.0.0.1');
    try {
      const open = async (): Promise<Socket> => {
        const s = connect(ports.tunnel, '127.0.0.1');
        held.push(s);
        s.on('error', () => undefined);
        await once(s, 'connect');
        s.write('ping');
        const [echo] = (await once(s, 'data')) as [Buffer];
        assert.equal(echo.toString(), 'ping');
        return s;
      };
      const a = await open();
      const b = await open();
      await eventually(async () => proxy.openFlows('127.0.0.1') === 2, 2000, 'two tracked flows');
      // An update that still allows the address: nothing is cut.
      policy = parseNetworkPolicy({ allowOut: ['127.0.0.0/8'], denyOut: [ALL_TRAFFIC] });
      assert.equal(proxy.recheck('127.0.0.1'), 0);
      assert.equal(await closedWithin(a, 200), false, 'an allowed flow stays open');
      // An update that denies it: both open flows end now, not at their next connect.
      policy = parseNetworkPolicy({ denyOut: [ALL_TRAFFIC] });
      assert.equal(proxy.recheck('127.0.0.1'), 2);
      assert.equal(await closedWithin(a, 2000), true, 'flow a cut');
      assert.equal(await closedWithin(b, 2000), true, 'flow b cut');
      assert.equal(proxy.openFlows('127.0.0.1'), 0);
      // And a new one is refused.
      const c = connect(ports.tunnel, '127.0.0.1');
      c.on('error', () => undefined);
      assert.equal(await closedWithin(c, 2000), true, 'a new flow is refused');
    } finally {
      await proxy.close();
    }
  });

  it('an egressProxy aimed at the node itself is never dialled (the proxy address is held to the forbidden ranges)', async () => {
    // Stands for a node-local service (an RPC port, a metadata endpoint) the tenant names as its "proxy".
    let reached = 0;
    const local = createServer((s) => {
      reached++;
      s.destroy();
    });
    local.listen(0, '127.0.0.3');
    await once(local, 'listening');
    const localPort = (local.address() as AddressInfo).port;
    policy = parseNetworkPolicy({ egressProxy: { address: `127.0.0.3:${localPort}`, username: 'u', password: 'p' } });
    const tryThrough = async (forbiddenCidrs: string[] | undefined): Promise<void> => {
      const proxy = new EgressProxy({ lookup, ...(forbiddenCidrs ? { forbiddenCidrs } : {}), originalDst: async () => ({ ip: '203.0.113.10', port: 8080 }) });
      const ports = await proxy.listen({}, '127.0.0.1');
      try {
        const c = connect(ports.tunnel, '127.0.0.1');
        c.on('error', () => undefined);
        await once(c, 'connect');
        c.write('hello');
        assert.equal(await closedWithin(c, 3000), true, 'the flow fails closed');
      } finally {
        await proxy.close();
      }
    };
    try {
      await tryThrough(undefined);
      assert.equal(reached, 0, 'loopback is forbidden: the node never connected to it');
      // The same policy with nothing forbidden does reach it: the check above is what stopped it.
      await tryThrough([]);
      assert.equal(reached, 1);
    } finally {
      local.close();
    }
  });

  it('the resolver answers REFUSED for denied names at once, and caps TCP sockets per sandbox', async () => {
    policy = parseNetworkPolicy({ allowOut: ['allowed.test'], denyOut: [ALL_TRAFFIC] });
    const seen: string[] = [];
    const dns = new DnsFilter({ lookup, upstream: { host: '127.0.0.9', port: 9 }, maxTcpPerSandbox: 4, timeoutMs: 300, onQuery: (q) => seen.push(q.name) });
    const port = await dns.listen(0, '127.0.0.1');
    try {
      const udp = createSocket('udp4');
      udp.send(dnsQuery('exfil-c0ffee.denied.test'), port, '127.0.0.1');
      const [reply] = (await once(udp, 'message')) as [Buffer];
      udp.close();
      assert.equal(reply.readUInt16BE(0), 0x1234);
      assert.equal(reply[3]! & 0xf, 5, 'REFUSED');
      assert.equal(reply.readUInt16BE(6), 0, 'no answer');

      // Sockets that never send a query: the sandbox gets four, the fifth is cut at accept.
      const socks: Socket[] = [];
      for (let i = 0; i < 4; i++) {
        const s = connect(port, '127.0.0.1');
        s.on('error', () => undefined);
        held.push(s);
        socks.push(s);
        await once(s, 'connect');
      }
      for (const s of socks) assert.equal(await closedWithin(s, 100), false, 'within the cap: kept');
      const over = connect(port, '127.0.0.1');
      over.on('error', () => undefined);
      assert.equal(await closedWithin(over, 2000), true, 'over the cap: cut');
      // Closing one frees a place.
      socks[0]!.destroy();
      await eventually(async () => {
        const s = connect(port, '127.0.0.1');
        s.on('error', () => undefined);
        held.push(s);
        return !(await closedWithin(s, 150));
      }, 3000, 'a place freed');

      // An unknown source (no sandbox bound) gets nothing at all.
      policy = undefined;
      const stranger = connect(port, '127.0.0.1');
      stranger.on('error', () => undefined);
      assert.equal(await closedWithin(stranger, 2000), true, 'unknown source cut');
      assert.ok(!seen.includes('allowed.test'));
    } finally {
      for (const s of held) s.destroy();
      await dns.close();
    }
  });
});

describe('the resolver listens on one port for UDP and TCP', () => {
  // Every source is a sandbox whose policy refuses everything: a query gets REFUSED at once.
  const denyAll = parseNetworkPolicy({ denyOut: [ALL_TRAFFIC] });
  const lookup = () => ({ sandboxId: 'sbx-dns-port', policy: denyAll });

  it('a port taken in TCP is refused whole: no UDP socket is left on it', async () => {
    const taken = createServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as AddressInfo).port;
    try {
      const dns = new DnsFilter({ lookup, upstream: { host: '127.0.0.9', port: 9 } });
      await assert.rejects(dns.listen(port, '127.0.0.1'), { code: 'EADDRINUSE' });
      // The UDP side was given up with the TCP one: the port's UDP space is free again.
      const probe = createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        probe.once('error', reject);
        probe.bind(port, '127.0.0.1', () => resolve());
      });
      probe.close();
    } finally {
      taken.close();
    }
  });

  it('an ephemeral port is the same for UDP and TCP, and answers on both', async () => {
    const dns = new DnsFilter({ lookup, upstream: { host: '127.0.0.9', port: 9 } });
    const port = await dns.listen(0, '127.0.0.1');
    try {
      const c = connect(port, '127.0.0.1');
      await once(c, 'connect');
      c.destroy();
      const udp = createSocket('udp4');
      const reply = once(udp, 'message');
      udp.send(dnsQuery('example.test'), port, '127.0.0.1');
      assert.ok((await reply)[0].length > 0);
      udp.close();
    } finally {
      await dns.close();
    }
  });
});
