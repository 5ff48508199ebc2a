// Issue 3 proof: the unchanged `e2b` SDK with only the four env vars drives the whole
// lifecycle through the control plane, and sandbox traffic through the edge.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment, eventually } from './deployment.js';

describe('sandbox lifecycle through the unchanged SDK', () => {
  const tag = randomBytes(4).toString('hex');
  const made: Sandbox[] = [];
  before(() => {
    deployment();
  });
  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  test('create with metadata, envs and timeout; getInfo reports them', async () => {
    const sbx = await Sandbox.create({ metadata: { suite: tag, n: '1' }, envs: { GREETING: 'hi' }, timeoutMs: 120_000 });
    made.push(sbx);
    assert.match(sbx.sandboxId, /^[a-z0-9]+$/);
    assert.equal((await sbx.commands.run('echo $GREETING')).stdout, 'hi\n');
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.deepEqual(info.metadata, { suite: tag, n: '1' });
    assert.equal(info.state, 'running');
    const lifetime = info.endAt.getTime() - info.startedAt.getTime();
    assert.ok(lifetime > 100_000 && lifetime <= 121_000, `lifetime ${lifetime}`);
  });

  test('setTimeout shortens and extends', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    await sbx.setTimeout(30_000);
    const short = await sbx.getInfo();
    assert.ok(short.endAt.getTime() - Date.now() <= 31_000);
    await sbx.setTimeout(600_000);
    const long = await sbx.getInfo();
    assert.ok(long.endAt.getTime() - Date.now() > 500_000);
  });

  test('a python http server inside is reached through the edge by Host header and by headers', async () => {
    const d = deployment();
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    await sbx.files.write('/home/user/site/index.html', `hello-from-${sbx.sandboxId}`);
    await sbx.commands.run('cd /home/user/site && python3 -m http.server 8080', { background: true });
    const edge = `http://127.0.0.1:${d.ports.edgeTraffic}/index.html`;
    const byHost = await eventually(async () => {
      const r = await request(edge, { headers: { host: sbx.getHost(8080) } });
      const text = await r.body.text();
      return r.statusCode === 200 ? text : undefined;
    }, 20_000, 'http server via Host');
    assert.equal(byHost, `hello-from-${sbx.sandboxId}`);
    assert.equal(sbx.getHost(8080), `8080-${sbx.sandboxId}.${d.env.E2B_DOMAIN}`);
    const byHeaders = await request(edge, { headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8080' } });
    assert.equal(byHeaders.statusCode, 200);
    assert.equal(await byHeaders.body.text(), `hello-from-${sbx.sandboxId}`);
    const closed = await request(edge, { headers: { host: sbx.getHost(8081) } });
    assert.equal(closed.statusCode, 502);
    assert.deepEqual(await closed.body.json(), {
      message: 'The sandbox is running but port is not open',
      sandboxId: sbx.sandboxId,
      port: 8081,
      code: 502,
    });
  });

  test('list filters by metadata and state and paginates', async () => {
    const ours = await Promise.all([0, 1, 2].map((i) => Sandbox.create({ metadata: { list: tag, i: String(i) }, timeoutMs: 120_000 })));
    made.push(...ours);
    const all = await Sandbox.list({ query: { metadata: { list: tag }, state: ['running'] } }).nextItems();
    assert.deepEqual(all.map((s) => s.sandboxId).sort(), ours.map((s) => s.sandboxId).sort());
    const one = await Sandbox.list({ query: { metadata: { list: tag, i: '1' } } }).nextItems();
    assert.deepEqual(one.map((s) => s.sandboxId), [ours[1].sandboxId]);

    const pager = Sandbox.list({ query: { metadata: { list: tag } }, limit: 2 });
    const seen: string[] = [];
    let pages = 0;
    while (pager.hasNext) {
      const page = await pager.nextItems();
      assert.ok(page.length <= 2);
      seen.push(...page.map((s) => s.sandboxId));
      pages++;
    }
    assert.equal(pages, 2);
    assert.deepEqual(seen.sort(), ours.map((s) => s.sandboxId).sort());
  });

  test('connect to a running sandbox returns a working handle', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    made.push(sbx);
    await sbx.files.write('/home/user/mark', 'connected');
    const again = await Sandbox.connect(sbx.sandboxId);
    assert.equal(await again.files.read('/home/user/mark'), 'connected');
  });

  test('kill: true, then false for a missing sandbox; isRunning false and the edge answers 502', async () => {
    const d = deployment();
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    assert.equal(await sbx.isRunning(), true);
    assert.equal(await sbx.kill(), true);
    assert.equal(await Sandbox.kill(sbx.sandboxId), false);
    assert.equal(await sbx.isRunning(), false);
    const r = await request(`http://127.0.0.1:${d.ports.edgeTraffic}/health`, {
      headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983' },
    });
    assert.equal(r.statusCode, 502);
    assert.deepEqual(await r.body.json(), { message: 'The sandbox was not found', sandboxId: sbx.sandboxId, code: 502 });
    await assert.rejects(Sandbox.connect(sbx.sandboxId));
  });

  test('a sandbox expires by itself at its end time', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 3_000 });
    assert.equal(await sbx.isRunning(), true);
    await eventually(async () => !(await sbx.isRunning()), 30_000, 'sandbox to expire');
    const listed = await Sandbox.list({ query: { state: ['running', 'paused'] } }).nextItems();
    assert.ok(!listed.some((s) => s.sandboxId === sbx.sandboxId));
  });
});
