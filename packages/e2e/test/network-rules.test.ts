// Issue 12: E2B's `network.rules` (header transforms on outbound HTTP/HTTPS) through the unchanged SDK against a
// stand-in internet: a network namespace holding 203.0.113.10 (example.test) and .11 (other.test) with HTTP :80
// and HTTPS :443 servers that record every request's headers (and answer without them), and a resolver on
// 203.0.113.53. The nodes' egress proxy terminates the sandbox's TLS with the sandbox's CA (in its trust store),
// sets the rule's headers and re-encrypts to the stand-in, whose CA the nodes trust through
// COVE_EGRESS_UPSTREAM_CA (deployment.ts). Never an address outside the machine.
// Needs root; run under /tmp/cove-heavy.lock.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { ALL_TRAFFIC, Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment, E2E_UPSTREAM_CA_FILE, eventually, type Deployment } from './deployment.js';
import { nodeOf, setDraining } from './nodes.js';
import { fetches, header, StandIn } from './stand-in-web.js';

const SECRET = `cove-secret-${randomBytes(12).toString('hex')}`;
const SECRET2 = `cove-secret2-${randomBytes(12).toString('hex')}`;

const RULES: Record<string, Array<{ transform: { headers: Record<string, string> } }>> = {
  'example.test': [{ transform: { headers: { 'X-Api-Key': SECRET } } }, { transform: { headers: { Authorization: `Bearer ${SECRET2}` } } }],
};
const NETWORK = { allowOut: ['example.test', 'other.test'], denyOut: [ALL_TRAFFIC], rules: RULES };

describe('network.rules: headers injected on the way out through the unchanged SDK', () => {
  const tag = randomBytes(4).toString('hex');
  const inet = new StandIn(tag);
  const made: Sandbox[] = [];
  let d: Deployment;

  before(async () => {
    d = deployment();
    await inet.start(join(d.stateDir, E2E_UPSTREAM_CA_FILE));
  });
  after(async () => {
    for (const n of d.nodes) await setDraining(d, n.rpcPort, false).catch(() => undefined);
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
    inet.remove();
  });

  test('HTTPS and HTTP to a rules host get the headers (replacing the sandbox\'s own); other hosts do not; the sandbox never holds the values', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: NETWORK });
    made.push(sbx);
    const before = inet.seen.length;
    const [https, http, other] = await fetches(sbx, [
      ['get', 'https://example.test/', { 'X-Api-Key': 'from-the-sandbox' }],
      ['get', 'http://example.test/', {}],
      ['get', 'http://other.test/', {}],
    ]);
    // Verified TLS from the sandbox's default context: its trust store holds the sandbox's egress CA.
    assert.equal(https, '200 ok example.test');
    assert.equal(http, '200 ok example.test');
    assert.equal(other, '200 ok other.test');
    const got = inet.seen.slice(before);
    const tlsReq = got.find((s) => s.tls && s.host === 'example.test');
    assert.ok(tlsReq, `the upstream got the HTTPS request: ${JSON.stringify(got.map((s) => s.host))}`);
    assert.equal(tlsReq.sni, 'example.test');
    assert.equal(header(tlsReq, 'x-api-key'), SECRET, 'the rule replaced the sandbox\'s own header');
    assert.equal(header(tlsReq, 'authorization'), `Bearer ${SECRET2}`, 'the second rule applied too');
    const plain = got.find((s) => !s.tls && s.host === 'example.test');
    assert.equal(plain && header(plain, 'x-api-key'), SECRET);
    const otherReq = got.find((s) => s.host === 'other.test');
    assert.ok(otherReq);
    assert.equal(header(otherReq, 'x-api-key'), undefined, 'no rule for other.test: nothing injected');
    assert.equal(header(otherReq, 'authorization'), undefined);

    // The values are nowhere in the sandbox: its whole filesystem, every process's env and command line. The
    // patterns reach grep base64-encoded through a pipe, so no command line or file of the search holds them.
    // A canary planted the same way proves the search sees the filesystem.
    const canary = `cove-canary-${randomBytes(12).toString('hex')}`;
    await sbx.files.write('/home/user/canary.txt', canary);
    const pats = Buffer.from(`${SECRET}\n${SECRET2}\n${canary}\n`).toString('base64');
    const search = await sbx.commands.run(
      `P() { echo ${pats} | base64 -d; }; grep -rlsF -f <(P) --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev / ; ` +
        `cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | grep -caF -f <(P) ; env | grep -caF -f <(P) ; true`,
      { timeoutMs: 180_000, user: 'root' },
    );
    // Only the canary's file, and no process's memory-visible env or arguments holding a value.
    assert.deepEqual(search.stdout.trim().split('\n'), ['/home/user/canary.txt', '0', '0'], `secret search: ${search.stdout}`);

    // The CA in the sandbox is a certificate; no private key in the sandbox belongs to it.
    const caPem = await sbx.files.read('/etc/cove-egress-ca.pem');
    assert.ok(new X509Certificate(caPem).ca);
    assert.doesNotMatch(caPem, /PRIVATE KEY/);
    const caPub = new X509Certificate(caPem).publicKey.export({ type: 'spki', format: 'der' }).toString('hex');
    const keys = await sbx.commands.run(`grep -rlsE --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 'BEGIN (EC )?PRIVATE KEY' / ; true`, { timeoutMs: 180_000, user: 'root' });
    for (const f of keys.stdout.split('\n').filter(Boolean)) {
      const pem = await sbx.files.read(f, { user: 'root' }).catch(() => '');
      let pub = '';
      try {
        pub = createPublicKey(pem).export({ type: 'spki', format: 'der' }).toString('hex');
      } catch {
        /* not a key we can parse */
      }
      assert.notEqual(pub, caPub, `${f} holds the egress CA's private key`);
    }
    await sbx.kill();
  });

  test('a Host that differs from the TLS name gets 421, and the upstream never sees the credentials for it', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: NETWORK });
    made.push(sbx);
    const before = inet.seen.length;
    const [mis] = await fetches(sbx, [['mismatch', 'example.test', 'other.test']]);
    assert.match(mis, /^HTTP\/1\.1 421 /);
    const leaked = inet.seen.slice(before).filter((s) => header(s, 'x-api-key') === SECRET || s.host === 'other.test');
    assert.deepEqual(leaked, []);
    await sbx.kill();
  });

  test('updateNetwork replaces the rules live; getInfo reports them; omitted rules clear', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { allowOut: ['example.test'], denyOut: [ALL_TRAFFIC] } });
    made.push(sbx);
    // No rules at create: the CA comes with the update.
    await sbx.updateNetwork({ allowOut: ['example.test'], denyOut: [ALL_TRAFFIC], rules: { 'example.test': [{ transform: { headers: { 'X-Api-Key': SECRET2 } } }] } });
    assert.deepEqual((await sbx.getInfo()).network?.rules, { 'example.test': [{ transform: { headers: { 'X-Api-Key': SECRET2 } } }] });
    let before = inet.seen.length;
    assert.deepEqual(await fetches(sbx, [['get', 'https://example.test/', {}]]), ['200 ok example.test']);
    assert.equal(header(inet.seen.slice(before).find((s) => s.tls)!, 'x-api-key'), SECRET2);
    await sbx.updateNetwork({ allowOut: ['example.test'], denyOut: [ALL_TRAFFIC] });
    before = inet.seen.length;
    // Without rules the proxy no longer terminates TLS: the stand-in's own certificate is not in the sandbox's
    // store, so a verifying client fails, and no header is added to what goes through.
    const [verified] = await fetches(sbx, [['get', 'https://example.test/', {}]]);
    assert.match(verified, /^failed:.*CERTIFICATE_VERIFY_FAILED|^failed:URLError/);
    assert.ok(inet.seen.slice(before).every((s) => header(s, 'x-api-key') === undefined));
    await sbx.kill();
  });

  test('rules keep working after pause and resume on the other node (the CA is derived, not carried)', async () => {
    assert.ok(d.nodes.length >= 2, 'needs two nodes');
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: NETWORK });
    made.push(sbx);
    assert.deepEqual(await fetches(sbx, [['get', 'https://example.test/', {}]]), ['200 ok example.test']);
    const origin = await nodeOf(d, sbx.sandboxId);
    assert.ok(origin);
    assert.equal(await sbx.pause(), true);
    await setDraining(d, origin, true);
    try {
      const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
      const now = await nodeOf(d, sbx.sandboxId);
      assert.ok(now && now !== origin, `resumed on the other node (${origin} → ${now})`);
      const before = inet.seen.length;
      await eventually(async () => (await fetches(resumed, [['get', 'https://example.test/', {}]]))[0] === '200 ok example.test', 15_000, 'verified HTTPS after resume');
      const req = inet.seen.slice(before).find((s) => s.tls && s.host === 'example.test');
      assert.equal(req && header(req, 'x-api-key'), SECRET);
      assert.deepEqual((await resumed.getInfo()).network?.rules, RULES);
      await resumed.kill();
    } finally {
      await setDraining(d, origin, false);
    }
  });
  test('maskRequestHost: servers in the sandbox see the mask (with the port), not the public name; envd is untouched', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000, network: { maskRequestHost: 'localhost:${PORT}' } });
    made.push(sbx);
    assert.equal((await sbx.getInfo()).network?.maskRequestHost, 'localhost:${PORT}');
    const server = `import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ("host=" + str(self.headers.get("Host"))).encode()
        self.send_response(200); self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()`;
    await sbx.files.write('/tmp/host_echo.py', server);
    await sbx.commands.run('python3 /tmp/host_echo.py', { background: true });
    const seen = await eventually(async () => {
      const r = await request(`http://127.0.0.1:${d.ports.edgeTraffic}/`, { headers: { host: sbx.getHost(8080) } });
      const text = await r.body.text();
      return r.statusCode === 200 ? text : undefined;
    }, 20_000, 'the host echo server through the edge');
    assert.equal(seen, 'host=localhost:8080');
    // The header route too: the client's Host (here the edge's address) never reaches the sandbox.
    const byHeaders = await request(`http://127.0.0.1:${d.ports.edgeTraffic}/`, { headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8080' } });
    assert.equal(await byHeaders.body.text(), 'host=localhost:8080');
    // envd (the SDK's own traffic) still works with the mask set.
    assert.equal((await sbx.commands.run('echo ok')).stdout.trim(), 'ok');
    // Bad masks are a 400 naming the field.
    const bad = await fetch(`${d.env.E2B_API_URL}/sandboxes`, {
      method: 'POST',
      headers: { 'x-api-key': d.env.E2B_API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ templateID: 'base', network: { maskRequestHost: 'evil host/\r\nx: y' } }),
    });
    assert.equal(bad.status, 400);
    const body = (await bad.json()) as { issues: Array<{ field: string }> };
    assert.deepEqual(body.issues.map((i) => i.field), ['maskRequestHost']);
    await sbx.kill();
  });
});
