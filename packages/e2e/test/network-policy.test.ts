// Issue 12: E2B's egress policy (allowOut/denyOut, allowInternetAccess, updateNetwork) through the unchanged SDK,
// enforced on the node, against a stand-in internet: a network namespace holding 203.0.113.10 and .11 (HTTP on :80),
// routed from the host (and so from the nodes' bridges) over a veth. Never an address outside the machine.
// Needs root; run under /tmp/cove-heavy.lock.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { ALL_TRAFFIC, Sandbox } from 'e2b';
import { deployment, eventually, type Deployment } from './deployment.js';
import { nodeOf, setDraining } from './nodes.js';

const WEB1 = '203.0.113.10';
const WEB2 = '203.0.113.11';
/** A private address the stand-in also serves: reachable from the host, never from a sandbox, whatever it allows. */
const PRIVATE = '10.99.0.1';
const HOST_LINK = '198.51.100.253';
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

/** The stand-in internet: netns + veth + host route + one HTTP server answering with the address it was reached on. */
class StandInInternet {
  readonly ns: string;
  readonly hostIf: string;
  private server: ChildProcess | undefined;

  constructor(tag: string) {
    this.ns = `covenp-${tag}`;
    this.hostIf = `covenp${tag.slice(0, 6)}`;
  }

  async start(): Promise<void> {
    this.remove();
    process.once('exit', () => this.remove());
    sh('ip', 'netns', 'add', this.ns);
    sh('ip', 'link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', 'np0', 'netns', this.ns);
    sh('ip', 'addr', 'add', `${HOST_LINK}/30`, 'dev', this.hostIf);
    sh('ip', 'link', 'set', this.hostIf, 'up');
    const x = (...a: string[]): void => sh('ip', '-n', this.ns, ...a);
    x('link', 'set', 'lo', 'up');
    x('addr', 'add', `${NS_LINK}/30`, 'dev', 'np0');
    x('link', 'set', 'np0', 'up');
    for (const a of [WEB1, WEB2, PRIVATE]) x('addr', 'add', `${a}/32`, 'dev', 'lo');
    x('route', 'add', 'default', 'via', HOST_LINK);
    // Not a connected (scope link) route: the nodes block their hosts' own LANs, not routed documentation ranges.
    sh('ip', 'route', 'replace', '203.0.113.0/24', 'via', NS_LINK, 'dev', this.hostIf);
    sh('ip', 'route', 'replace', `${PRIVATE}/32`, 'via', NS_LINK, 'dev', this.hostIf);
    const script = `require('node:http').createServer((q, r) => r.end('web ' + q.socket.localAddress)).listen(80, '0.0.0.0', () => console.log('ready'))`;
    this.server = spawn('ip', ['netns', 'exec', this.ns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      this.server!.stdout!.once('data', () => resolve());
      this.server!.once('exit', (code) => reject(new Error(`stand-in web server exited ${code}`)));
    });
  }

  remove(): void {
    this.server?.kill('SIGKILL');
    quiet('ip', 'route', 'del', '203.0.113.0/24', 'via', NS_LINK);
    quiet('ip', 'route', 'del', `${PRIVATE}/32`, 'via', NS_LINK);
    quiet('ip', 'link', 'del', this.hostIf);
    quiet('ip', 'netns', 'del', this.ns);
  }
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

async function expectReach(sbx: Sandbox, want: Record<string, boolean>, what: string): Promise<void> {
  for (const [ip, ok] of Object.entries(want)) assert.equal(await reachable(sbx, ip), ok, `${what}: ${ip} should be ${ok ? 'reachable' : 'blocked'}`);
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
    // Parts not enforced yet are refused, never ignored.
    assert.equal((await putNetwork(d, sbx.sandboxId, { allowOut: ['example.com'], denyOut: [ALL_TRAFFIC] })).status, 501);
    assert.equal((await putNetwork(d, sbx.sandboxId, { egressProxy: { address: `${WEB1}:1080` } })).status, 501);
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

  test('the policy survives pause and resume on the other node, with no open moment', async () => {
    assert.ok(d.nodes.length >= 2, 'needs two nodes');
    const sbx = await Sandbox.create({ timeoutMs: 300_000, network: { allowOut: [WEB1], denyOut: [ALL_TRAFFIC] } });
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
      assert.deepEqual((await resumed.getInfo()).network?.allowOut, [WEB1]);
      await resumed.kill();
    } finally {
      await setDraining(d, origin, false);
    }
  });
});
