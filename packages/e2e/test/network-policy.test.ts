// Issue 12: E2B's egress policy (allowOut/denyOut with addresses and hostnames, allowInternetAccess, updateNetwork)
// through the unchanged SDK, enforced on the node, against a stand-in internet: a network namespace holding
// 203.0.113.10 and .11 (HTTP on :80 and :8080, HTTPS on :443) and a resolver on 203.0.113.53 for a few test
// domains (the e2e nodes' egress DNS filter forwards allowed names to it: COVE_EGRESS_DNS), routed from the host
// (and so from the nodes' bridges) over a veth. Never an address outside the machine.
// Needs root; run under /tmp/cove-heavy.lock.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ALL_TRAFFIC, Sandbox } from 'e2b';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';
import { deployment, E2E_EGRESS_DNS, eventually, repoRoot, type Deployment } from './deployment.js';
import { allNodesHealthy, nodeClients, nodeOf, setDraining } from './nodes.js';

const WEB1 = '203.0.113.10';
const WEB2 = '203.0.113.11';
/** A private address the stand-in also serves: reachable from the host, never from a sandbox, whatever it allows. */
const PRIVATE = '10.99.0.1';
const HOST_LINK = '198.51.100.253';
/** The stand-in's zone: what its resolver answers (anything else is NXDOMAIN). */
const ZONE: Record<string, string> = { 'example.test': WEB1, 'other.test': WEB2, 'wild.test': WEB2, '*.wild.test': WEB2 };
/** The customer's SOCKS5 proxy in the stand-in (user puser, password ppass). */
const SOCKS = '203.0.113.80';
const NS_LINK = '198.51.100.254';

function sh(...args: string[]): void {
  execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}
function quiet(...args: string[]): void {
  try {
    sh(...args);
  } catch {
    /* already gone */
  }
}

/**
 * The stand-in internet: netns + veth + host route; HTTP (:80, :8080) and HTTPS (:443) servers answering with the
 * address they were reached on, and a resolver for ZONE whose every query is recorded.
 */
class StandInInternet {
  readonly ns: string;
  readonly hostIf: string;
  /** names the stand-in's resolver was asked for: what left the node */
  readonly queries: string[] = [];
  /** what the stand-in SOCKS5 proxy saw: `tunnel <target>` or `auth-failed` */
  readonly socks: string[] = [];
  private readonly children: ChildProcess[] = [];
  private pki: TestPki | undefined;

  constructor(tag: string) {
    this.ns = `covenp-${tag}`;
    this.hostIf = `covenp${tag.slice(0, 6)}`;
  }

  private async spawnReady(args: string[], env: Record<string, string> = {}, onLine?: (line: string) => void): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', this.ns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    this.children.push(child);
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line === 'ready') resolve();
          else onLine?.(line);
        }
      });
      child.once('exit', (code) => reject(new Error(`stand-in ${args[0]} exited ${code}`)));
    });
  }

  async start(): Promise<void> {
    this.remove();
    process.once('exit', () => this.remove());
    this.pki = makeTestPki();
    sh('ip', 'netns', 'add', this.ns);
    sh('ip', 'link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', 'np0', 'netns', this.ns);
    sh('ip', 'addr', 'add', `${HOST_LINK}/30`, 'dev', this.hostIf);
    sh('ip', 'link', 'set', this.hostIf, 'up');
    const x = (...a: string[]): void => sh('ip', '-n', this.ns, ...a);
    x('link', 'set', 'lo', 'up');
    x('addr', 'add', `${NS_LINK}/30`, 'dev', 'np0');
    x('link', 'set', 'np0', 'up');
    for (const a of [WEB1, WEB2, PRIVATE, E2E_EGRESS_DNS, SOCKS]) x('addr', 'add', `${a}/32`, 'dev', 'lo');
    x('route', 'add', 'default', 'via', HOST_LINK);
    // Not a connected (scope link) route: the nodes block their hosts' own LANs, not routed documentation ranges.
    sh('ip', 'route', 'replace', '203.0.113.0/24', 'via', NS_LINK, 'dev', this.hostIf);
    sh('ip', 'route', 'replace', `${PRIVATE}/32`, 'via', NS_LINK, 'dev', this.hostIf);
    // Long keep-alive: a test holds one connection open across a policy update.
    const script = `const fs = require('node:fs');
const h = (q, r) => r.end((q.socket.encrypted ? 'webs ' : 'web ') + q.socket.localAddress);
for (const p of [80, 8080]) require('node:http').createServer({ keepAliveTimeout: 120000 }, h).listen(p, '0.0.0.0');
require('node:https').createServer({ keepAliveTimeout: 120000, cert: fs.readFileSync(process.env.CERT), key: fs.readFileSync(process.env.KEY) }, h).listen(443, '0.0.0.0', () => console.log('ready'));`;
    await this.spawnReady(['-e', script], { CERT: this.pki.files.serverCert, KEY: this.pki.files.serverKey });
    const dnsMain = fileURLToPath(import.meta.resolve('@cove/test-support/stand-in-dns-main'));
    await this.spawnReady([dnsMain, E2E_EGRESS_DNS, ...Object.entries(ZONE).map(([n, ip]) => `${n}=${ip}`)], {}, (line) => {
      this.queries.push((JSON.parse(line) as { name: string }).name);
    });
    const socksMain = fileURLToPath(import.meta.resolve('@cove/test-support/stand-in-socks-main'));
    await this.spawnReady([socksMain, SOCKS, '1080', 'puser', 'ppass', ...Object.entries(ZONE).map(([n, ip]) => `${n}=${ip}`)], {}, (line) => {
      const e = JSON.parse(line) as { event: string; target?: string };
      this.socks.push(e.event === 'tunnel' ? `tunnel ${e.target}` : e.event);
    });
  }

  remove(): void {
    for (const c of this.children.splice(0)) c.kill('SIGKILL');
    quiet('ip', 'route', 'del', '203.0.113.0/24', 'via', NS_LINK);
    quiet('ip', 'route', 'del', `${PRIVATE}/32`, 'via', NS_LINK);
    quiet('ip', 'link', 'del', this.hostIf);
    quiet('ip', 'netns', 'del', this.ns);
    this.pki?.remove();
    this.pki = undefined;
  }
}

/**
 * Probes run inside the sandbox in one python process. `dns` sends a raw A query to the sandbox's configured
 * resolver and reports the rcode and answer (and how long the answer took); `http`/`https` fetch `/` by name
 * (resolved through the sandbox's resolver) or at a given address with the name as Host / SNI; `tcp` connects.
 */
const PROBE_PY = `import sys, socket, ssl, json, time, struct, http.client
def dns(name):
    ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    t = time.time(); s.sendto(q, (ns, 53))
    try:
        r = s.recv(4096)
    except socket.timeout:
        return {"rcode": "timeout"}
    an = struct.unpack(">H", r[6:8])[0]
    return {"rcode": r[3] & 15, "answer": ".".join(map(str, r[-4:])) if an else None, "ms": int((time.time() - t) * 1000)}
def http_(host, ip=None, port=80):
    try:
        c = http.client.HTTPConnection(ip or host, port, timeout=3)
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        return str(r.status) + " " + r.read().decode()
    except Exception as e:
        return "blocked:" + type(e).__name__
def https(host, ip=None):
    try:
        s = socket.create_connection((ip or host, 443), timeout=3)
        t = ssl._create_unverified_context().wrap_socket(s, server_hostname=host)
        t.sendall(("GET / HTTP/1.1\\r\\nHost: " + host + "\\r\\nConnection: close\\r\\n\\r\\n").encode())
        data = b""
        while True:
            d = t.recv(4096)
            if not d:
                break
            data += d
        return data.split(b"\\r\\n\\r\\n", 1)[1].decode()
    except Exception as e:
        return "blocked:" + type(e).__name__
def tcp(ip, port):
    try:
        socket.create_connection((ip, int(port)), timeout=2).close()
        return "open"
    except Exception as e:
        return "blocked:" + type(e).__name__
out = []
for p in json.loads(sys.argv[1]):
    out.append({"dns": dns, "http": http_, "https": https, "tcp": tcp}[p[0]](*p[1:]))
print(json.dumps(out))
`;

async function probes(sbx: Sandbox, list: Array<Array<string | number>>): Promise<unknown[]> {
  await sbx.files.write('/tmp/np_probe.py', PROBE_PY);
  const r = await sbx.commands.run(`python3 /tmp/np_probe.py '${JSON.stringify(list)}'`, { timeoutMs: 60_000 });
  return JSON.parse(r.stdout.trim()) as unknown[];
}

/** What the sandbox gets for GET http://<ip>/ (2 s budget): the body, or `blocked:<reason>`. */
async function reach(sbx: Sandbox, ip: string): Promise<string> {
  const py = `import urllib.request
try:
    print(urllib.request.urlopen("http://${ip}/", timeout=2).read().decode())
except Exception as e:
    print("blocked:" + type(e).__name__)`;
  const r = await sbx.commands.run(`python3 -c '${py}'`, { timeoutMs: 15_000 });
  return r.stdout.trim();
}

async function reachable(sbx: Sandbox, ip: string): Promise<boolean> {
  const out = await reach(sbx, ip);
  if (out === `web ${ip}`) return true;
  assert.match(out, /^blocked:/, `unexpected answer from ${ip}: ${out}`);
  return false;
}

/** All addresses probed at once: a blocked one costs its whole 2 s budget. */
async function expectReach(sbx: Sandbox, want: Record<string, boolean>, what: string): Promise<void> {
  const entries = Object.entries(want);
  const got = await Promise.all(entries.map(([ip]) => reachable(sbx, ip)));
  entries.forEach(([ip, ok], i) => assert.equal(got[i], ok, `${what}: ${ip} should be ${ok ? 'reachable' : 'blocked'}`));
}

/** PUT /sandboxes/{id}/network as raw HTTP, for the structured body of a refusal. */
async function putNetwork(d: Deployment, id: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${d.env.E2B_API_URL}/sandboxes/${id}/network`, {
    method: 'PUT',
    headers: { 'x-api-key': d.env.E2B_API_KEY, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: r.status === 204 ? {} : ((await r.json()) as Record<string, unknown>) };
}

describe('network policy (allowOut/denyOut, updateNetwork) through the unchanged SDK', () => {
  const tag = randomBytes(4).toString('hex');
  const inet = new StandInInternet(tag);
  const made: Sandbox[] = [];
  let d: Deployment;

  before(async () => {
    d = deployment();
    await inet.start();
  });
  after(async () => {
    for (const n of d.nodes) await setDraining(d, n.rpcPort, false).catch(() => undefined);
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
    inet.remove();
  });

  test('no policy: the stand-in internet is reachable (the route works)', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    await expectReach(sbx, { [WEB1]: true, [WEB2]: true }, 'no policy');
    await sbx.kill();
  });

  test('allow one IP under a deny-all; getInfo reports it; updates apply live both ways; allow beats deny', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { allowOut: [WEB1], denyOut: [ALL_TRAFFIC] } });
    made.push(sbx);
    await expectReach(sbx, { [WEB1]: true, [WEB2]: false }, 'allow web1, deny all');
    const info = await sbx.getInfo();
    assert.deepEqual(info.network?.allowOut, [WEB1]);
    assert.deepEqual(info.network?.denyOut, [ALL_TRAFFIC]);

    // A process that must survive every update: the sandbox is never restarted.
    const keeper = await sbx.commands.run('sleep 600', { background: true });

    // Deny one IP only.
    let t0 = Date.now();
    await sbx.updateNetwork({ denyOut: [WEB2] });
    await expectReach(sbx, { [WEB1]: true, [WEB2]: false }, 'deny web2');
    // Allow beats deny: the whole range denied, web2 allowed.
    t0 = Date.now();
    await sbx.updateNetwork({ allowOut: [WEB2], denyOut: ['203.0.113.0/24'] });
    assert.equal(await reachable(sbx, WEB2), true, 'the allowed address inside a denied range');
    assert.ok(Date.now() - t0 < 5_000);
    assert.equal(await reachable(sbx, WEB1), false);
    // Tighten to nothing, then open again (omitted fields clear).
    await sbx.updateNetwork({ allowInternetAccess: false });
    await expectReach(sbx, { [WEB1]: false, [WEB2]: false }, 'allowInternetAccess false');
    t0 = Date.now();
    await sbx.updateNetwork({});
    const opened = Date.now() - t0;
    await expectReach(sbx, { [WEB1]: true, [WEB2]: true }, 'cleared');
    assert.ok(opened < 1_000, `updateNetwork answered in ${opened} ms`);
    const info2 = await sbx.getInfo();
    assert.equal(info2.network?.allowOut, undefined);
    assert.equal(info2.network?.denyOut, undefined);
    const procs = await sbx.commands.list();
    assert.ok(procs.some((p) => p.pid === keeper.pid), 'the sandbox kept running through the updates');
    await sbx.kill();
  });

  test('bad policies are 400 with every issue named, and the sandbox keeps its previous policy', async () => {
    await assert.rejects(
      Sandbox.create({ network: { allowOut: ['10.0.0.300/8'] } }),
      (err: Error) => /^400/.test(err.message) && /allowOut\[0\]/.test(err.message) && /CIDR/.test(err.message),
    );
    const sbx = await Sandbox.create({ timeoutMs: 120_000, network: { denyOut: [WEB2] } });
    made.push(sbx);
    await expectReach(sbx, { [WEB1]: true, [WEB2]: false }, 'deny web2');
    const bad: Array<[unknown, string, string]> = [
      [{ allowOut: ['203.0.113.0/33'] }, 'invalid_cidr', 'allowOut[0]'],
      [{ allowOut: [`${'a'.repeat(250)}.example.com`] }, 'too_long', 'allowOut[0]'],
      [{ allowOut: Array.from({ length: 300 }, (_, i) => `198.18.${i >> 8}.${i & 255}`) }, 'too_many', 'allowOut'],
      [{ denyOut: ['example.com'] }, 'hostname_in_deny', 'denyOut[0]'],
      [{ denyOut: ['::1'] }, 'ipv6_unsupported', 'denyOut[0]'],
    ];
    for (const [body, code, field] of bad) {
      const r = await putNetwork(d, sbx.sandboxId, body);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.equal(r.body.error_code, 'invalid_network_policy');
      const issues = r.body.issues as Array<{ code: string; field: string; message: string }>;
      assert.ok(issues.some((i) => i.code === code && i.field === field && i.message.length > 0), `${code} at ${field}: ${JSON.stringify(issues)}`);
    }
    // Through the SDK too: a clear error.
    await assert.rejects(sbx.updateNetwork({ denyOut: ['example.com'] }), (err: Error) => /denyOut\[0\]/.test(err.message));
    // Bad rules (a bare `*`, a header name with a space) are refused like the rest (network-rules.test.ts covers good ones).
    const badRules = await putNetwork(d, sbx.sandboxId, { rules: { '*': [{ transform: { headers: { 'x a': 'b' } } }] } });
    assert.equal(badRules.status, 400);
    assert.deepEqual((badRules.body.issues as Array<{ code: string }>).map((i) => i.code).sort(), ['invalid_header', 'invalid_rule_host'], JSON.stringify(badRules.body));
    const badProxy = await putNetwork(d, sbx.sandboxId, { egressProxy: { address: `ftp://${SOCKS}:1080` } });
    assert.equal(badProxy.status, 400);
    assert.ok((badProxy.body.issues as Array<{ code: string }>).some((i) => i.code === 'invalid_proxy'), JSON.stringify(badProxy.body));
    // Nothing changed.
    await expectReach(sbx, { [WEB1]: true, [WEB2]: false }, 'after refused updates');
    assert.deepEqual((await sbx.getInfo()).network?.denyOut, [WEB2]);
    await sbx.kill();
  });

  test('an allow never opens what the node closes: a private address stays unreachable', async () => {
    // The host reaches it: only the node's firewall stands between a sandbox and it.
    assert.equal(await (await fetch(`http://${PRIVATE}/`)).text(), `web ${PRIVATE}`);
    const sbx = await Sandbox.create({ timeoutMs: 120_000, network: { allowOut: ['10.0.0.0/8', PRIVATE, '172.16.0.0/12', '169.254.0.0/16'], denyOut: [ALL_TRAFFIC] } });
    made.push(sbx);
    await expectReach(sbx, { [PRIVATE]: false, [WEB1]: false }, 'private ranges allowed under a deny-all');
    await sbx.updateNetwork({ allowOut: [PRIVATE] });
    await expectReach(sbx, { [PRIVATE]: false, [WEB1]: true }, 'a private address allowed without a deny');
    await sbx.kill();
  });

  test('hostname allows under a deny-all: only allowed names resolve, Host and SNI decide, the node dials what it resolved', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { allowOut: ['example.test', '*.wild.test'], denyOut: [ALL_TRAFFIC] } });
    made.push(sbx);
    assert.deepEqual((await sbx.getInfo()).network?.allowOut, ['example.test', '*.wild.test']);
    const exfil = `exfil-${tag}.other.test`;
    const r = await probes(sbx, [
      ['dns', 'example.test'],
      ['dns', 'a.b.wild.test'],
      ['dns', 'other.test'],
      ['dns', 'wild.test'],
      ['dns', exfil],
      ['http', 'example.test'],
      ['http', 'a.wild.test'],
      ['https', 'example.test'],
      ['https', 'x.wild.test'],
      // A name that is not allowed, at its own address: refused by Host, and by SNI.
      ['http', 'other.test', WEB2],
      ['https', 'other.test', WEB2],
      // Spoofing: an allowed name aimed at a denied address reaches only the allowed name's server.
      ['http', 'example.test', WEB2],
      ['https', 'example.test', WEB2],
      // A disallowed SNI at the allowed name's own address: still refused (the name decides, not the address).
      ['https', 'other.test', WEB1],
      // A literal address never resolved through the filter: no name, so the deny-all decides.
      ['http', WEB1, WEB1],
      // Other ports of an allowed name's address: a bare TCP stream carries no name.
      ['tcp', WEB1, 8080],
    ]);
    const [dnsEx, dnsWild, dnsOther, dnsApex, dnsExfil] = r as Array<{ rcode: number | string; answer: string | null; ms: number }>;
    assert.deepEqual([dnsEx!.rcode, dnsEx!.answer], [0, WEB1], 'an allowed name resolves');
    assert.deepEqual([dnsWild!.rcode, dnsWild!.answer], [0, WEB2], 'a wildcard-allowed name resolves');
    for (const [q, name] of [[dnsOther, 'other.test'], [dnsApex, 'wild.test (apex of a wildcard)'], [dnsExfil, exfil]] as const) {
      assert.equal(q!.rcode, 5, `${name}: REFUSED by the node`);
      assert.ok(q!.ms < 1000, `${name}: answered at once (${q!.ms} ms), not left to time out`);
    }
    assert.deepEqual(r.slice(5), [
      `200 web ${WEB1}`,
      `200 web ${WEB2}`,
      `webs ${WEB1}`,
      `webs ${WEB2}`,
      `403 {"code":"egress_denied","message":"egress to other.test is not allowed by the sandbox's network policy"}`,
      r[10], // checked below: a TLS failure of some kind
      `200 web ${WEB1}`,
      `webs ${WEB1}`,
      r[13],
      `403 {"code":"egress_denied","message":"egress to ${WEB1} is not allowed by the sandbox's network policy"}`,
      r[15],
    ]);
    for (const i of [10, 13, 15]) assert.match(String(r[i]), /^blocked:/, `probe ${i}: ${String(r[i])}`);
    // Queries for names that are not allowed never left the node.
    assert.ok(inet.queries.includes('example.test'), `the stand-in resolver saw the allowed name (${inet.queries.join(', ')})`);
    for (const n of ['other.test', 'wild.test', exfil]) assert.ok(!inet.queries.includes(n), `${n} reached the stand-in resolver`);
    await sbx.kill();
  });

  test('updateNetwork switches hostname policies live: open proxied connections are cut, new ones follow the new policy', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { allowOut: ['example.test'], denyOut: [ALL_TRAFFIC] } });
    made.push(sbx);
    const keeper = await sbx.commands.run('sleep 600', { background: true });
    // One kept-alive TLS connection to example.test, asking again every 100 ms and reporting when it breaks.
    // The report is replaced whole (rename), never truncated and rewritten: a read between the two would see ''.
    const held = `import os, socket, ssl, sys, time
def report(s):
    open(sys.argv[1] + ".tmp", "w").write(s)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
t = ssl._create_unverified_context().wrap_socket(socket.create_connection(("example.test", 443), timeout=5), server_hostname="example.test")
n = 0
while True:
    try:
        t.sendall(b"GET / HTTP/1.1\\r\\nHost: example.test\\r\\n\\r\\n")
        d = t.recv(4096)
        if not d:
            raise EOFError()
        n += 1
        report("open " + str(n))
    except Exception as e:
        report("cut " + type(e).__name__)
        break
    time.sleep(0.1)
`;
    await sbx.files.write('/tmp/held.py', held);
    await sbx.commands.run('python3 /tmp/held.py /tmp/held', { background: true });
    await eventually(async () => (await sbx.files.read('/tmp/held').catch(() => '')).startsWith('open'), 15_000, 'the held connection is open');

    const t0 = Date.now();
    await sbx.updateNetwork({ allowOut: ['other.test'], denyOut: [ALL_TRAFFIC] });
    const cut = await eventually(async () => {
      const v = await sbx.files.read('/tmp/held').catch(() => '');
      return v.startsWith('cut') ? Date.now() - t0 : undefined;
    }, 10_000, 'the held connection to a no longer allowed name is cut');
    assert.ok(cut < 3_000, `cut ${cut} ms after the update was sent`);
    const after1 = await probes(sbx, [['dns', 'example.test'], ['dns', 'other.test'], ['http', 'other.test'], ['https', 'example.test', WEB1]]);
    assert.equal((after1[0] as { rcode: number }).rcode, 5);
    assert.deepEqual([(after1[1] as { rcode: number }).rcode, (after1[1] as { answer: string }).answer], [0, WEB2]);
    assert.equal(after1[2], `200 web ${WEB2}`);
    assert.match(String(after1[3]), /^blocked:/);

    // And back, then open entirely (omitted fields clear): addresses are reachable directly again.
    await sbx.updateNetwork({ allowOut: ['example.test'], denyOut: [ALL_TRAFFIC] });
    assert.deepEqual(await probes(sbx, [['http', 'example.test'], ['http', 'other.test', WEB2]]), [
      `200 web ${WEB1}`,
      `403 {"code":"egress_denied","message":"egress to other.test is not allowed by the sandbox's network policy"}`,
    ]);
    // A connection held through the proxy survives an update that opens everything: nothing denies it now.
    await sbx.commands.run('python3 /tmp/held.py /tmp/held2', { background: true });
    const count = async (): Promise<number> => {
      const v = await sbx.files.read('/tmp/held2').catch(() => '');
      assert.ok(!v.startsWith('cut'), `the held connection was cut: ${v}`);
      return v.startsWith('open ') ? Number(v.slice(5)) : 0;
    };
    await eventually(async () => (await count()) > 0, 15_000, 'the second held connection is open');
    await sbx.updateNetwork({});
    const atUpdate = await count();
    await eventually(async () => (await count()) > atUpdate + 5, 15_000, 'the held connection goes on after the update');
    await expectReach(sbx, { [WEB1]: true, [WEB2]: true }, 'cleared');
    assert.ok((await count()) > 0);
    assert.ok((await sbx.commands.list()).some((p) => p.pid === keeper.pid), 'the sandbox kept running through the updates');
    await sbx.kill();
  });

  test('DNS under a deny-all that allows nothing is answered REFUSED at once, and nothing leaves the node', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000, allowInternetAccess: false });
    made.push(sbx);
    const name = `nothing-${tag}.example.test`;
    const [q, web] = (await probes(sbx, [['dns', name], ['http', 'example.test', WEB1]])) as [{ rcode: number; ms: number }, string];
    assert.equal(q.rcode, 5, JSON.stringify(q));
    assert.ok(q.ms < 1000, `answered in ${q.ms} ms`);
    assert.match(web, /^blocked:/);
    assert.ok(!inet.queries.includes(name));
    await sbx.kill();
  });

  test('egressProxy: TCP goes through the customer SOCKS5 proxy with its credentials; refused or node-local proxies fail closed', async () => {
    const proxy = { address: `${SOCKS}:1080`, username: 'puser', password: 'ppass' };
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { egressProxy: proxy } });
    made.push(sbx);
    const shown = (await sbx.getInfo()).network as { egressProxy?: Record<string, unknown> } | undefined;
    assert.deepEqual(shown?.egressProxy, { address: proxy.address, username: 'puser' }, 'getInfo never shows the password');
    const through = await probes(sbx, [['http', WEB1, WEB1], ['http', 'x', WEB2, 8080], ['https', 'example.test', WEB1]]);
    assert.deepEqual(through, [`200 web ${WEB1}`, `200 web ${WEB2}`, `webs ${WEB1}`]);
    for (const t of [`${WEB1}:80`, `${WEB2}:8080`, `${WEB1}:443`]) assert.ok(inet.socks.includes(`tunnel ${t}`), `tunnelled ${t}: ${inet.socks.join(', ')}`);

    // Wrong credentials: the proxy refuses, and the node never falls back to a direct connection.
    await sbx.updateNetwork({ egressProxy: { ...proxy, password: 'wrong' } });
    const before = inet.socks.filter((e) => e === 'auth-failed').length;
    const refused = await probes(sbx, [['http', WEB1, WEB1], ['http', 'x', WEB2, 8080]]);
    assert.equal(refused[0], '502 {"code":"egress_upstream_failed","message":"could not reach the destination"}');
    assert.match(String(refused[1]), /^blocked:/);
    assert.ok(inet.socks.filter((e) => e === 'auth-failed').length > before, 'the proxy saw the bad login');

    // A "proxy" on the node itself (a service on its loopback, here one that counts who connects, or a private
    // address): never dialled, fails closed.
    let dialled = 0;
    const nodeLocal = createServer((c) => {
      dialled++;
      c.destroy();
    });
    await new Promise<void>((r) => nodeLocal.listen(0, '127.0.0.1', () => r()));
    try {
      for (const address of [`127.0.0.1:${(nodeLocal.address() as AddressInfo).port}`, '10.0.0.1:1080']) {
        await sbx.updateNetwork({ egressProxy: { address } });
        assert.deepEqual(await probes(sbx, [['http', WEB1, WEB1]]), ['502 {"code":"egress_upstream_failed","message":"could not reach the destination"}'], address);
      }
      assert.equal(dialled, 0, 'the node never connected to its own loopback for the sandbox');
    } finally {
      nodeLocal.close();
    }

    // Removed (omitted fields clear): direct again, and the proxy sees nothing more.
    await sbx.updateNetwork({});
    const tunnels = inet.socks.length;
    assert.deepEqual(await probes(sbx, [['http', WEB1, WEB1], ['http', 'x', WEB2, 8080]]), [`200 web ${WEB1}`, `200 web ${WEB2}`]);
    assert.equal(inet.socks.length, tunnels, 'no tunnel once the proxy is removed');
    await sbx.kill();
  });

  test('the policy survives pause and resume on the other node, with no open moment', async () => {
    assert.ok(d.nodes.length >= 2, 'needs two nodes');
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { allowOut: [WEB1, 'example.test'], denyOut: [ALL_TRAFFIC] } });
    made.push(sbx);
    await expectReach(sbx, { [WEB1]: true, [WEB2]: false }, 'before pause');
    // A loop that tries web2 ten times a second across the pause and resume and records any success.
    const loop = `import urllib.request, time
while True:
    try:
        urllib.request.urlopen("http://${WEB2}/", timeout=0.5).read(); open("/tmp/leak", "a").write(str(time.time()) + "\\n")
    except Exception:
        pass
    time.sleep(0.1)`;
    await sbx.files.write('/tmp/loop.py', loop);
    await sbx.commands.run('python3 /tmp/loop.py', { background: true });
    const origin = await nodeOf(d, sbx.sandboxId);
    assert.ok(origin);
    assert.equal(await sbx.pause(), true);
    await setDraining(d, origin, true);
    try {
      const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
      const now = await nodeOf(d, sbx.sandboxId);
      assert.ok(now && now !== origin, `resumed on the other node (${origin} → ${now})`);
      await expectReach(resumed, { [WEB1]: true, [WEB2]: false }, 'after resume on the other node');
      // The loop ran on through the resume (it is restored with memory) and never got through.
      await eventually(async () => (await resumed.commands.list()).some((p) => p.cmd.includes('loop.py') || p.args.join(' ').includes('loop.py')), 10_000, 'the loop after resume');
      const leak = await resumed.commands.run('cat /tmp/leak 2>/dev/null || true');
      assert.equal(leak.stdout.trim(), '', 'web2 was never reached');
      assert.deepEqual((await resumed.getInfo()).network?.allowOut, [WEB1, 'example.test']);
      // The other node bound the hostname policy too: its resolver and proxy know the sandbox.
      const [q, named, other] = (await probes(resumed, [['dns', 'other.test'], ['http', 'example.test'], ['http', 'other.test', WEB2]])) as [{ rcode: number }, string, string];
      assert.equal(q.rcode, 5);
      assert.equal(named, `200 web ${WEB1}`);
      assert.match(other, /^403 /);
      await resumed.kill();
    } finally {
      await setDraining(d, origin, false);
    }
  });

  test('a restart of the node keeps hostname policies: re-bound before the sandbox has egress again, never open', { timeout: 300_000 }, async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { allowOut: ['example.test'], denyOut: [ALL_TRAFFIC] } });
    made.push(sbx);
    assert.deepEqual(await probes(sbx, [['http', 'example.test']]), [`200 web ${WEB1}`]);
    // Tries a denied address ten times a second across the restart and records any success.
    const loop = `import urllib.request, time
while True:
    try:
        r = urllib.request.urlopen("http://${WEB2}/", timeout=0.5).read(); open("/tmp/leak", "a").write(r.decode() + "\\n")
    except Exception:
        pass
    time.sleep(0.1)`;
    await sbx.files.write('/tmp/loop.py', loop);
    await sbx.commands.run('python3 /tmp/loop.py', { background: true });
    const rpcPort = await nodeOf(d, sbx.sandboxId);
    const index = d.nodes.findIndex((n) => n.rpcPort === rpcPort);
    assert.ok(index >= 0);
    const name = index === 0 ? 'orchestrator' : `orchestrator-${index + 1}`;
    // A table left by a slot that went away without destroy (a crash): it would filter whichever slot gets its
    // address next. The restarted node must sweep it.
    const topo = JSON.parse(readFileSync(join(d.stateDir, 'topology.json'), 'utf8')) as { nodes: Array<{ rpcPort: number; runtime: { instance: string } }> };
    const instance = topo.nodes.find((n) => n.rpcPort === rpcPort)!.runtime.instance;
    const stale = `${instance}_egress_zz${tag}`;
    execFileSync('nft', ['-f', '-'], { input: `table ip ${stale} {\n chain c {\n  type filter hook forward priority filter; policy accept;\n  ip saddr 10.255.255.254 drop\n }\n}\n` });
    const { pid } = JSON.parse(readFileSync(join(d.stateDir, 'run', `${name}.pid`), 'utf8')) as { pid: number };
    process.kill(pid, 'SIGTERM');
    await eventually(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 60_000, `${name} to stop`);
    execFileSync(
      process.execPath,
      [join(repoRoot, 'packages/cli/dist/src/main.js'), 'up', '--state-dir', d.stateDir, '--port-offset', '100', '--warm-pool', 'base=2', '--nodes', String(d.nodes.length)],
      { stdio: 'ignore', env: { ...process.env, COVE_EGRESS_DNS: process.env.COVE_EGRESS_DNS ?? E2E_EGRESS_DNS } },
    );
    await eventually(async () => (await nodeClients(d, rpcPort!).sandboxes.list({})).sandboxes.some((s) => s.sandboxId === sbx.sandboxId), 120_000, 'the node to be back with the sandbox');
    await allNodesHealthy(d, 60_000);
    const [q, named, other] = (await probes(sbx, [['dns', 'other.test'], ['http', 'example.test'], ['http', 'other.test', WEB2]])) as [{ rcode: number }, string, string];
    assert.equal(q.rcode, 5, 'denied names still refused');
    assert.equal(named, `200 web ${WEB1}`, 'the allowed name works again (new proxy ports re-rendered into the slot table)');
    assert.match(other, /^403 /);
    const leak = await sbx.commands.run('cat /tmp/leak 2>/dev/null || true');
    assert.equal(leak.stdout.trim(), '', 'the denied address was never reached across the restart');
    const tables = execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' });
    assert.ok(!tables.includes(stale), 'the stale egress table was swept at start');
    assert.ok(tables.includes(`${instance}_egress_`), 'the live sandbox keeps its table');
    await sbx.kill();
  });
});
