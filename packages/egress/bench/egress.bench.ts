// Egress proxy benchmark, in network namespaces (needs root): HTTP and HTTPS through the egress proxy vs direct
// in the same run — added p50 latency per fresh connection and single-connection download throughput — and the
// time for a policy update (map swap + nft transaction) to be in force.
// Run: `node packages/egress/dist/bench/egress.bench.js [requests=300] [bytes=67108864]`.

import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTestPki } from '@cove/test-support/tls-certs';
import { ADDR, createNetns, NsProcess } from '../test/fixtures/netns.js';

const n = Number(process.argv[2] ?? 300);
const bytes = Number(process.argv[3] ?? 64 * 1024 * 1024);
const result = (name: string, value: number, unit: string, target?: string): void => {
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name, value, unit, ...(target ? { target } : {}) })}\n`);
};

const ns = createNetns();
const pki = makeTestPki();
const o = (args: string[]): void => void execFileSync('openssl', args, { cwd: pki.dir, stdio: ['ignore', 'ignore', 'pipe'] });
o(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=web', '-keyout', 'web.key', '-out', 'web.csr']);
writeFileSync(join(pki.dir, 'web.ext'), 'subjectAltName=DNS:allowed.test\nextendedKeyUsage=serverAuth\n');
o(['x509', '-req', '-in', 'web.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'web.pem', '-extfile', 'web.ext']);
const inet = new NsProcess(ns.inet, './internet-main.js', { WEB_CERT: join(pki.dir, 'web.pem'), WEB_KEY: join(pki.dir, 'web.key') });
const node = new NsProcess(ns.node, './node-main.js', { SB_IP: ADDR.sandbox, SB_IFACE: ns.sbIface, NFT_TABLE: `covegr_${ns.tag}`, UPSTREAM_DNS: ADDR.dns, UPSTREAM_CA: pki.files.ca, QUIET: '1' });

function client(scheme: 'http' | 'https'): Promise<{ p50: number; p90: number; mbps: number }> {
  const file = fileURLToPath(new URL('../test/fixtures/bench-client.js', import.meta.url));
  return new Promise((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', ns.sb, process.execPath, file, JSON.stringify({ scheme, ip: ADDR.web1, host: 'allowed.test', ca: pki.files.ca, n, bytes })], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`bench client exited ${code}`))));
  });
}

try {
  await inet.waitFor((e) => e.event === 'ready');
  await node.waitFor((e) => e.event === 'ready');
  // Quiet the per-request event stream: the bench measures, it does not inspect.
  for (const scheme of ['http', 'https'] as const) {
    await node.call({ op: 'set', network: {} });
    const direct = await client(scheme);
    // Hostname allow under deny-all: every connection is intercepted, named, judged, resolved and dialled.
    await node.call({ op: 'set', network: { allowOut: ['allowed.test'], denyOut: ['0.0.0.0/0'] } });
    const proxied = await client(scheme);
    console.log(`${scheme}: direct p50 ${direct.p50.toFixed(2)} ms ${direct.mbps.toFixed(0)} MB/s; proxied p50 ${proxied.p50.toFixed(2)} ms ${proxied.mbps.toFixed(0)} MB/s`);
    result(`egress ${scheme} added latency p50`, proxied.p50 - direct.p50, 'ms', '<= 1');
    result(`egress ${scheme} throughput vs direct`, proxied.mbps / direct.mbps, 'ratio', '>= 0.8');
  }
  const times: number[] = [];
  for (let i = 0; i < 30; i++) {
    const r = await node.call({ op: 'set', network: i % 2 ? { denyOut: [ADDR.web2] } : { allowOut: ['allowed.test', '*.wild.test', ADDR.web3], denyOut: ['0.0.0.0/0'] } });
    times.push(r.ms as number);
  }
  times.sort((a, b) => a - b);
  result('egress policy update to effect p50', times[15], 'ms', '<= 200');
  result('egress policy update to effect max', times[29], 'ms', '<= 200');
} finally {
  await node.stop();
  await inet.stop();
  ns.remove();
  pki.remove();
}
