// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
// The egress policy enforced for real: nft in a node netns, the egress proxy and filtering resolver in front of
// a stand-in internet, a sandbox netns as the (hostile) client. Needs root; run under /tmp/cove-heavy.lock.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';
import { ADDR, createNetns, NsProcess, probe, type Netns } from './fixtures/netns.js';

let ns: Netns;
let pki: TestPki;
let inet: NsProcess;
let node: NsProcess;
let sbCa = '';
const ALL = '0.0.0.0/0';
const SECRET = 'S3CR3T-egress-value-7f3a91';

function webLeaf(p: TestPki): { cert: string; key: string } {
  const names = ['allowed.test', 'secret.test', 'denied.test', 'wild.test', '*.wild.test', '*.b.wild.test'].map((n) => `DNS:${n}`).join(',');
  const o = (args: string[]): void => void execFileSync('openssl', args, { cwd: p.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  o(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=web', '-keyout', 'web.key', '-out', 'web.csr']);
  writeFileSync(join(p.dir, 'web.ext'), `subjectAltName=${names}\nextendedKeyUsage=serverAuth\n`);
  o(['x509', '-req', '-in', 'web.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'web.pem', '-extfile', 'web.ext']);
  return { cert: join(p.dir, 'web.pem'), key: join(p.dir, 'web.key') };
}

async function setPolicy(network: unknown, secrets?: Record<string, string>): Promise<Record<string, unknown>> {
  const r = await node.call({ op: 'set', network, secrets });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  if (typeof r.ca === 'string') {
    sbCa = join(pki.dir, 'sandbox-ca.pem');
    writeFileSync(sbCa, r.ca);
  }
  return r;
}

const http = (ip: string, host?: string, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> => probe(ns.sb, { mode: 'http', ip, host, ...extra });
const https = (ip: string, host: string, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> =>
  probe(ns.sb, { mode: 'https', ip, host, ca: pki.files.ca, ...extra });

/** A request the internet must see; once it has, every earlier event is in `inet.events` too. */
async function barrier(): Promise<void> {
  await setPolicy({});
  const path = `/barrier-${Math.random().toString(36).slice(2)}`;
  const r = await http(ADDR.web1, 'barrier.test', { path });
  assert.equal(r.status, 200);
  await inet.waitFor((e) => e.event === 'request' && e.path === path);
}

describe('egress policy in network namespaces', { timeout: 180_000 }, () => {
  before(async () => {
    ns = createNetns();
    pki = makeTestPki();
    const leaf = webLeaf(pki);
    inet = new NsProcess(ns.inet, './internet-main.js', { WEB_CERT: leaf.cert, WEB_KEY: leaf.key });
    await inet.waitFor((e) => e.event === 'ready');
    node = new NsProcess(ns.node, './node-main.js', {
      SB_IP: ADDR.sandbox, SB_IFACE: ns.sbIface, NFT_TABLE: `covegr_${ns.tag}`, UPSTREAM_DNS: ADDR.dns, UPSTREAM_CA: pki.files.ca, HELLO_TIMEOUT_MS: '1000', MAX_CONNECTIONS: '20',
    });
    await node.waitFor((e) => e.event === 'ready');
  });

  after(async () => {
    await node?.stop();
    await inet?.stop();
    ns?.remove();
    pki?.remove();
  });

  it('no lists allows everything; allow one IP under deny-all', async () => {
    await setPolicy({});
    assert.equal((await http(ADDR.web2)).status, 200);
    await setPolicy({ allowOut: [ADDR.web1], denyOut: [ALL] });
    const ok = await http(ADDR.web1);
    assert.equal(ok.status, 200);
    assert.equal((ok.body as { server: string }).server, ADDR.web1);
    assert.ok((await http(ADDR.web2)).error, 'a denied address must not answer');
    assert.ok((await probe(ns.sb, { mode: 'raw', ip: ADDR.socks, port: 1080, hex: '050100' })).error, 'plain TCP is judged by address');
  });

  it('deny one IP, and allow beats deny', async () => {
    await setPolicy({ denyOut: [ADDR.web2] });
    assert.equal((await http(ADDR.web1)).status, 200);
    assert.ok((await http(ADDR.web2)).error);
    await setPolicy({ allowOut: [ADDR.web2], denyOut: ['203.0.113.0/24'] });
    assert.equal((await http(ADDR.web2)).status, 200);
    assert.ok((await http(ADDR.web1)).error);
  });

  it('abuse: a forged source address is dropped before the proxy or resolver could mistake it for another sandbox', async () => {
    execFileSync('ip', ['-n', ns.sb, 'addr', 'add', '10.213.0.3/32', 'dev', `cgs${ns.tag}s`]);
    await setPolicy({});
    assert.equal((await http(ADDR.web1, undefined, { path: '/from-self' })).status, 200);
    const forged = await http(ADDR.web1, undefined, { source: '10.213.0.3', path: '/forged', timeoutMs: 1500 });
    assert.ok(forged.error, JSON.stringify(forged));
    await barrier();
    assert.ok(!inet.events.some((e) => e.path === '/forged'));
  });

  it('allowInternetAccess:false denies all', async () => {
    await setPolicy({ allow_internet_access: false });
    assert.ok((await http(ADDR.web1)).error);
  });

  it('domain allow and deny over HTTP (Host) and HTTPS (SNI)', async () => {
    await setPolicy({ allowOut: ['allowed.test'], denyOut: [ALL] });
    const h = await http(ADDR.web1, 'allowed.test');
    assert.equal(h.status, 200);
    const denied = await http(ADDR.web2, 'denied.test', { path: '/must-not-arrive' });
    assert.equal(denied.status, 403);
    assert.equal((denied.body as { code: string }).code, 'egress_denied');
    const s = await https(ADDR.web1, 'allowed.test');
    assert.equal(s.status, 200);
    assert.equal((s.body as { scheme: string }).scheme, 'https');
    assert.ok((await https(ADDR.web2, 'denied.test')).error, 'TLS to a name not allowed is cut');
    // A large response that ends with the server's FIN arrives whole through the relay, even when the client
    // reads slowly and the tail is still queued in the proxy as the upstream closes.
    const whole = await http(ADDR.web1, 'allowed.test', { path: '/bytes/8388608', headers: { connection: 'close' }, pauseMs: 300 });
    assert.equal(whole.length, 8388608);
    await barrier();
    assert.ok(!inet.events.some((e) => e.path === '/must-not-arrive' || (e.event === 'tls' && e.servername === 'denied.test')));
  });

  it('wildcards match subdomains at any depth, never the apex', async () => {
    await setPolicy({ allowOut: ['*.wild.test'], denyOut: [ALL] });
    assert.equal((await https(ADDR.web3, 'a.b.wild.test')).status, 200);
    assert.equal((await http(ADDR.web3, 'x.wild.test')).status, 200);
    assert.ok((await https(ADDR.web3, 'wild.test')).error);
  });

  it('abuse: SNI / Host spoofing toward a denied address reaches only what the allowed name resolves to', async () => {
    await setPolicy({ allowOut: ['allowed.test'], denyOut: [ALL] });
    const s = await https(ADDR.web2, 'allowed.test');
    assert.equal(s.status, 200);
    assert.equal((s.body as { server: string }).server, ADDR.web1, 'the proxy dialled its own resolution, not the denied address');
    const h = await http(ADDR.web2, 'allowed.test');
    assert.equal((h.body as { server: string }).server, ADDR.web1);
  });

  it('DNS: only allowed names resolve; denied names never reach the upstream', async () => {
    await setPolicy({ allowOut: ['allowed.test', '*.wild.test'], denyOut: [ALL] });
    const r = await probe(ns.sb, { mode: 'dns', ip: ADDR.dns, names: ['allowed.test', 'denied.test', 'exfil-0badc0de.evil.test', 'a.wild.test'] });
    const res = r.results as Record<string, { rcode: number; answers: string[] }>;
    assert.deepEqual(res['allowed.test'], { rcode: 0, answers: [ADDR.web1] });
    assert.deepEqual(res['a.wild.test'], { rcode: 0, answers: [ADDR.web3] });
    assert.equal(res['denied.test'].rcode, 5);
    assert.equal(res['exfil-0badc0de.evil.test'].rcode, 5);
    await inet.waitFor((e) => e.event === 'dns' && e.name === 'a.wild.test');
    await barrier();
    assert.ok(!inet.events.some((e) => e.event === 'dns' && (e.name === 'denied.test' || String(e.name).includes('exfil'))));
  });

  it('DNS over TCP is filtered the same; hostile framing is cut', async () => {
    await setPolicy({ allowOut: ['allowed.test'], denyOut: [ALL] });
    assert.deepEqual(await probe(ns.sb, { mode: 'dnstcp', ip: ADDR.dns, names: ['allowed.test'] }), { rcode: 0, ancount: 1, answer: ADDR.web1 });
    assert.deepEqual(await probe(ns.sb, { mode: 'dnstcp', ip: ADDR.dns, names: ['tcp-exfil.evil.test'] }), { rcode: 5, ancount: 0, answer: null });
    // A length prefix of 65535 then nothing: the resolver closes instead of buffering or waiting.
    const huge = await probe(ns.sb, { mode: 'dnstcp', ip: ADDR.dns, hex: 'ffff' + '00'.repeat(64) });
    assert.deepEqual(huge, { closed: true, got: 0 });
    await barrier();
    assert.ok(!inet.events.some((e) => e.event === 'dns' && String(e.name).includes('tcp-exfil')));
  });

  it('abuse: a DNS query flood is refused on the node, rate limited, and the resolver keeps serving', async () => {
    await setPolicy({ allowOut: ['allowed.test'], denyOut: [ALL] });
    const names = Array.from({ length: 50 }, (_, i) => `flood${i}.exfil.test`);
    const r = await probe(ns.sb, { mode: 'dnsflood', ip: ADDR.dns, names, count: 3000 });
    assert.ok((r.answered as number) < 3000, `rate limit drops part of a flood (answered ${r.answered})`);
    for (const v of Object.values(r.results as Record<string, { rcode: number }>)) assert.equal(v.rcode, 5);
    // Served again once the bucket refills: wait on the answer, not on a clock.
    let ok = false;
    for (let i = 0; i < 20 && !ok; i++) {
      const q = await probe(ns.sb, { mode: 'dns', ip: ADDR.dns, names: ['allowed.test'], timeoutMs: 1000 });
      ok = (q.results as Record<string, { rcode: number }>)['allowed.test']?.rcode === 0;
    }
    assert.ok(ok);
    assert.ok(!inet.events.some((e) => e.event === 'dns' && String(e.name).includes('exfil')));
  });

  it('rules: headers are injected with the secret at the egress; the sandbox never sees it', async () => {
    const network = {
      allowOut: ['secret.test'],
      denyOut: [ALL],
      rules: { 'secret.test': [{ transform: { headers: { Authorization: 'Bearer ${e2b.secrets.api-key}', 'X-Static': 'one' } } }] },
    };
    const set = await setPolicy(network, { 'api-key': SECRET });
    assert.match(String(set.ca), /BEGIN CERTIFICATE/);
    assert.doesNotMatch(String(set.ca), /PRIVATE KEY/);
    for (const mode of ['https', 'http'] as const) {
      const path = `/inject-${mode}`;
      const r = mode === 'https'
        ? await probe(ns.sb, { mode, ip: ADDR.web1, host: 'secret.test', ca: sbCa, path, headers: { authorization: 'Bearer sandbox-own' } })
        : await http(ADDR.web1, 'secret.test', { path, headers: { authorization: 'Bearer sandbox-own' } });
      assert.equal(r.status, 200, JSON.stringify(r));
      const seen = await inet.waitFor((e) => e.event === 'request' && e.path === path);
      const headers = seen.headers as Record<string, string>;
      assert.equal(headers.authorization, `Bearer ${SECRET}`, 'the rule replaces the sandbox own header');
      assert.equal(headers['x-static'], 'one');
      assert.equal((r.body as { authSha256: string }).authSha256, createHash('sha256').update(`Bearer ${SECRET}`).digest('hex'));
      assert.ok(!JSON.stringify(r).includes(SECRET), 'the secret is nowhere in what the sandbox received');
    }
    // Over the terminated connection a request for another vhost gets no credentials.
    const other = await probe(ns.sb, { mode: 'https', ip: ADDR.web1, host: 'secret.test', ca: sbCa, headers: { host: 'allowed.test' }, path: '/vhost' });
    assert.equal(other.status, 421);
    // An unknown secret fails the request without naming a value.
    await setPolicy({ ...network, rules: { 'secret.test': [{ transform: { headers: { Authorization: '${e2b.secrets.missing}' } } }] } }, {});
    const miss = await http(ADDR.web1, 'secret.test');
    assert.equal(miss.status, 502);
    assert.equal((miss.body as { code: string }).code, 'egress_transform_failed');
  });

  it('egressProxy: allowed flows are chained through SOCKS5 and HTTP CONNECT with credentials, fail closed', async () => {
    await setPolicy({ egressProxy: { address: `${ADDR.socks}:1080`, username: 'puser', password: 'ppass' } });
    assert.equal((await http(ADDR.web1)).status, 200);
    await inet.waitFor((e) => e.event === 'socks' && e.target === `${ADDR.web1}:80`);
    assert.equal((await https(ADDR.web2, 'denied.test')).status, 200, 'no allow/deny lists: TLS on 443 is tunnelled too');
    await inet.waitFor((e) => e.event === 'socks' && e.target === `${ADDR.web2}:443`);
    // Hostname-matched flows go as ATYP=domain (remote DNS), as E2B's.
    await setPolicy({ allowOut: ['allowed.test'], denyOut: [ALL], egressProxy: { address: `socks5://${ADDR.socks}:1080`, username: 'puser', password: 'ppass' } });
    assert.equal((await https(ADDR.web2, 'allowed.test')).status, 200);
    await inet.waitFor((e) => e.event === 'socks' && e.target === 'allowed.test:443' && e.atyp === 3);
    await setPolicy({ egressProxy: { address: `http://${ADDR.connect}:3128`, username: 'puser', password: 'ppass' } });
    assert.equal((await http(ADDR.web3)).status, 200);
    await inet.waitFor((e) => e.event === 'connect' && e.target === `${ADDR.web3}:80`);
    await setPolicy({ egressProxy: { address: `${ADDR.socks}:1080`, username: 'puser', password: 'wrong' } });
    const r = await http(ADDR.web1);
    assert.equal(r.status, 502, 'a refused proxy fails closed, never direct');
  });

  it('live update takes effect for new connections within 200 ms, both ways', async () => {
    await setPolicy({});
    assert.equal((await http(ADDR.web2)).status, 200);
    const tighten = await setPolicy({ denyOut: [ADDR.web2] });
    assert.ok((tighten.ms as number) < 200, `update took ${tighten.ms} ms`);
    assert.ok((await http(ADDR.web2)).error);
    const loosen = await setPolicy({ allowOut: ['allowed.test'], denyOut: [ALL] });
    assert.ok((loosen.ms as number) < 200);
    assert.equal((await http(ADDR.web2, 'allowed.test')).status, 200);
    const open = await setPolicy({});
    assert.ok((open.ms as number) < 200);
    assert.equal((await http(ADDR.web2)).status, 200);
  });

  it('abuse: garbage, oversize and slow ClientHellos and huge HTTP heads are cut before any upstream', async () => {
    await setPolicy({ allowOut: ['allowed.test'], denyOut: [ALL] });
    const garbage = await probe(ns.sb, { mode: 'raw', ip: ADDR.web1, port: 443, hex: 'deadbeef'.repeat(64) });
    assert.equal(garbage.got, 0);
    assert.ok(garbage.closed || garbage.error);
    const huge = await probe(ns.sb, { mode: 'raw', ip: ADDR.web1, port: 443, hex: '160301ffff' + '01'.repeat(100) });
    assert.equal(huge.got, 0);
    assert.ok(huge.closed || huge.error);
    const slow = await probe(ns.sb, { mode: 'raw', ip: ADDR.web1, port: 443, hex: '1603010200', timeoutMs: 5000 });
    assert.ok(slow.closed || slow.error, 'a hello that never completes is cut');
    assert.ok((slow.ms as number) >= 900 && (slow.ms as number) < 4000, `cut after the hello deadline (${slow.ms} ms)`);
    // Holding many half-open hellos: past the per-sandbox cap they are refused at once, not queued.
    const many = await probe(ns.sb, { mode: 'rawmany', ip: ADDR.web1, port: 443, hex: '1603010200', count: 50 });
    assert.equal(many.cutEarly, 30, 'exactly the connections over the cap of 20 are cut before the hello deadline');
    const big = await http(ADDR.web1, 'allowed.test', { headers: { 'x-pad': 'a'.repeat(20_000) }, path: '/huge' });
    assert.ok(big.status === 400 || big.error, JSON.stringify(big).slice(0, 200));
    await barrier();
    assert.ok(!inet.events.some((e) => e.path === '/huge'));
    assert.ok(!inet.events.some((e) => e.event === 'tls' && e.server === ADDR.web1 && e.servername === undefined));
  });
});
