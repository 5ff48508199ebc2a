// The public and admin API over real HTTP (undici): auth, admin, limits, bad input on every route, 501s.
// Flows needing a node use the wire-level cluster fixture (fixtures/fake-cluster.ts).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { NOT_IMPLEMENTED_ROUTES } from '../src/http/not-implemented-routes.js';
import { ADMIN_TOKEN, PUBLIC_URL, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

describe('public and admin API', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;
  let teamId: string;
  let clusterId: string;

  before(async () => {
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane({ COVE_CP_BODY_LIMIT: '65536' });
    ({ key, teamId, clusterId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 2, maxTimeoutHours: 1 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
  });

  test('health needs no key', async () => {
    const r = await call(cp.url, 'GET', '/health');
    assert.equal(r.status, 200);
  });

  test('missing or invalid API key → 401 JSON', async () => {
    for (const k of [undefined, 'e2b_' + '0'.repeat(40), 'garbage', 'x'.repeat(1000)]) {
      const r = await call(cp.url, 'GET', '/v2/sandboxes', { key: k });
      assert.equal(r.status, 401);
      assert.equal(r.body.code, 401);
      assert.equal(typeof r.body.message, 'string');
    }
    const bad = await call(cp.url, 'POST', '/v2/sandboxes', { body: { templateID: 'base' } });
    assert.equal(bad.status, 401);
  });

  test('Authorization: Bearer <api key> is accepted too', async () => {
    const r = await call(cp.url, 'GET', '/v2/sandboxes', { headers: { authorization: `Bearer ${key}` } });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, []);
  });

  test('admin API requires X-Admin-Token', async () => {
    for (const t of [undefined, 'wrong', ADMIN_TOKEN + 'x']) {
      const r = await call(cp.url, 'GET', '/admin/teams', { admin: t });
      assert.equal(r.status, 401);
      assert.equal(r.body.code, 401);
    }
    const ok = await call(cp.url, 'GET', '/admin/teams', { admin: ADMIN_TOKEN });
    assert.equal(ok.status, 200);
    assert.ok(ok.body.some((t: { id: string }) => t.id === teamId));
  });

  test('admin: clusters are idempotent on identical config, never show the token, conflict otherwise', async () => {
    const list = await call(cp.url, 'GET', '/admin/clusters', { admin: ADMIN_TOKEN });
    assert.equal(list.status, 200);
    assert.ok(!JSON.stringify(list.body).includes(cluster.token));
    const again = await call(cp.url, 'POST', '/admin/clusters', {
      admin: ADMIN_TOKEN,
      body: { name: `cluster-${cluster.endpoint}`, endpoint: cluster.endpoint, token: cluster.token, sandboxDomain: 'cove.test', publicUrl: PUBLIC_URL },
    });
    assert.equal(again.status, 200);
    assert.equal(again.body.id, clusterId);
    const other = await call(cp.url, 'POST', '/admin/clusters', {
      admin: ADMIN_TOKEN,
      body: { name: `cluster-${cluster.endpoint}`, endpoint: cluster.endpoint, token: 'another-token-0123456789', sandboxDomain: 'cove.test' },
    });
    assert.equal(other.status, 409);
    const bad = await call(cp.url, 'POST', '/admin/clusters', { admin: ADMIN_TOKEN, body: { name: 'x', endpoint: 'ftp://x', token: 'short' } });
    assert.equal(bad.status, 400);
    assert.match(bad.body.message, /endpoint/);
    assert.match(bad.body.message, /token/);
    const nodes = await call(cp.url, 'GET', `/admin/clusters/${clusterId}/nodes`, { admin: ADMIN_TOKEN });
    assert.equal(nodes.status, 200);
    assert.equal(nodes.body[0].nodeId, 'node-a');
  });

  test('admin: a sandbox domain may name its port (the SDK appends it verbatim); anything else that is no DNS name → 400', async () => {
    for (const sandboxDomain of ['cove.localhost:3443', 'sandbox.example.com']) {
      const ok = await call(cp.url, 'POST', '/admin/clusters', { admin: ADMIN_TOKEN, body: { name: `d-${sandboxDomain}`, endpoint: 'http://127.0.0.1:1', token: 'domain-token-0123456789', sandboxDomain } });
      assert.equal(ok.status, 201, JSON.stringify(ok.body));
      assert.equal(ok.body.sandboxDomain, sandboxDomain);
    }
    for (const sandboxDomain of ['cove.localhost:0', 'cove.localhost:65536', 'cove.localhost:', 'a:1:2', 'evil.com/x', 'user@cove.localhost', 'cove.localhost:3443/']) {
      const bad = await call(cp.url, 'POST', '/admin/clusters', { admin: ADMIN_TOKEN, body: { name: 'bad-domain', endpoint: 'http://127.0.0.1:1', token: 'domain-token-0123456789', sandboxDomain } });
      assert.equal(bad.status, 400, sandboxDomain);
      assert.match(bad.body.message, /sandboxDomain/, sandboxDomain);
    }
  });

  test('admin: teams, keys (shown once, masked after), rotation, binding', async () => {
    const t = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'second' } });
    assert.equal(t.status, 201);
    assert.match(t.body.apiKey.key, /^e2b_[0-9a-f]{40}$/);
    assert.equal(t.body.team.maxConcurrentSandboxes, 20);
    assert.equal(t.body.team.maxTimeoutHours, 1);
    assert.equal(t.body.team.clusterId, null);
    const id = t.body.team.id;
    const k1 = t.body.apiKey.key as string;
    const detail = await call(cp.url, 'GET', `/admin/teams/${id}`, { admin: ADMIN_TOKEN });
    assert.ok(!JSON.stringify(detail.body).includes(k1));
    assert.equal(detail.body.apiKeys[0].mask, `e2b_…${k1.slice(-4)}`);

    // unbound team: create says so clearly
    const c = await call(cp.url, 'POST', '/v2/sandboxes', { key: k1, body: { templateID: 'base' } });
    assert.equal(c.status, 503);
    assert.match(c.body.message, /not bound to a cluster/);

    const bind = await call(cp.url, 'PUT', `/admin/teams/${id}/cluster`, { admin: ADMIN_TOKEN, body: { clusterId } });
    assert.equal(bind.status, 200);
    assert.equal(bind.body.clusterId, clusterId);
    const badBind = await call(cp.url, 'PUT', `/admin/teams/${id}/cluster`, { admin: ADMIN_TOKEN, body: { clusterId: 'nope' } });
    assert.equal(badBind.status, 404);

    const k2 = await call(cp.url, 'POST', `/admin/teams/${id}/api-keys`, { admin: ADMIN_TOKEN, body: { name: 'ci' } });
    assert.equal(k2.status, 201);
    const rot = await call(cp.url, 'POST', `/admin/teams/${id}/api-keys/${k2.body.id}/rotate`, { admin: ADMIN_TOKEN });
    assert.equal(rot.status, 201);
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: k2.body.key })).status, 401);
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: rot.body.key })).status, 200);
    const del = await call(cp.url, 'DELETE', `/admin/teams/${id}/api-keys/${rot.body.id}`, { admin: ADMIN_TOKEN });
    assert.equal(del.status, 204);
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: rot.body.key })).status, 401);

    // an admin-supplied key (reproducible `cove up`) works and cannot be registered twice
    const supplied = `e2b_${'ab'.repeat(20)}`;
    const t3 = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'third', clusterId, apiKey: supplied } });
    assert.equal(t3.status, 201);
    assert.equal(t3.body.apiKey.key, supplied);
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: supplied })).status, 200);
    const dup = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'fourth', apiKey: supplied } });
    assert.equal(dup.status, 409);
    const badKey = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'fifth', apiKey: 'e2b_XYZ' } });
    assert.equal(badKey.status, 400);
  });

  test('bad input answers 400 JSON on every route', async () => {
    const cases: Array<[string, string, unknown]> = [
      ['POST', '/v2/sandboxes', { templateID: 5 }],
      ['POST', '/v2/sandboxes', {}],
      ['POST', '/sandboxes', { templateID: 'base', timeout: 'long' }],
      ['POST', '/sandboxes', { templateID: 'base', timeout: -1 }],
      ['POST', '/sandboxes', { templateID: 'base', metadata: { a: 1 } }],
      ['POST', '/sandboxes', { templateID: 'base', envVars: 'x' }],
      ['POST', '/v2/sandboxes', { templateID: 'base', network: { allowPublicTraffic: 'no' } }],
      ['POST', '/v2/sandboxes', [1, 2]],
      ['POST', '/sandboxes/iabc/timeout', {}],
      ['POST', '/sandboxes/iabc/timeout', { timeout: 1.5 }],
      ['POST', '/sandboxes/iabc/refreshes', { duration: 3601 }],
      ['POST', '/sandboxes/iabc/connect', { timeout: 'x' }],
      ['POST', '/v2/sandboxes/iabc/connect', { timeout: -5 }],
    ];
    for (const [method, path, body] of cases) {
      const r = await call(cp.url, method, path, { key, body });
      assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 400);
    }
    const queries = ['limit=0', 'limit=101', 'limit=abc', 'order=up', 'state=running,dead', 'startedAfter=yesterday', 'nextToken=%%%', 'nextToken=bm9wZQ'];
    for (const q of queries) {
      const r = await call(cp.url, 'GET', `/v2/sandboxes?${q}`, { key });
      assert.equal(r.status, 400, q);
      assert.equal(r.body.code, 400);
    }
    const badJson = await call(cp.url, 'POST', '/v2/sandboxes', { key, raw: '{"templateID": ' });
    assert.equal(badJson.status, 400);
    assert.equal(badJson.body.code, 400);
    const text = await call(cp.url, 'POST', '/v2/sandboxes', { key, raw: '<x/>', headers: { 'content-type': 'application/xml' } });
    assert.equal(text.status, 415);
    assert.equal(text.body.code, 415);
  });

  test('malformed URLs (400) and over-long path parameters (414) → JSON', async () => {
    for (const [p, status] of [['/sandboxes/%ff', 400], ['/sandboxes/%', 400], [`/sandboxes/${'a'.repeat(5000)}`, 414]] as const) {
      const r = await call(cp.url, 'GET', p, { key });
      assert.equal(r.status, status, p.slice(0, 40));
      assert.equal(r.body.code, status);
      assert.equal(typeof r.body.message, 'string');
    }
  });

  test('huge bodies → 413 JSON', async () => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', metadata: { big: 'x'.repeat(60_000), more: 'y'.repeat(10_000) } } });
    assert.equal(r.status, 413);
    assert.equal(r.body.code, 413);
  });

  test('a body far over the limit still gets its 413 read, and the connection then serves the next request', async () => {
    // 8 MiB against a 64 KiB limit, all of it written: before, the server closed while the client was still sending.
    const { port } = new URL(cp.url);
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => (answer += c));
    const size = 8 * 1024 * 1024;
    socket.write(`POST /v2/sandboxes HTTP/1.1\r\nhost: x\r\nx-api-key: ${key}\r\ncontent-type: application/json\r\ncontent-length: ${size}\r\n\r\n`);
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    for (let sent = 0; sent < size; sent += chunk.length) if (!socket.write(chunk)) await once(socket, 'drain');
    socket.write('GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    await once(socket, 'end');
    const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [413, 200]);
    assert.match(answer, /"code":413/);
  });

  test('a body beyond what the server reads and drops ends in a close, and the server stays up', { timeout: 30_000 }, async () => {
    const { port } = new URL(cp.url);
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write(`POST /v2/sandboxes HTTP/1.1\r\nhost: x\r\nx-api-key: ${key}\r\ncontent-type: application/json\r\ncontent-length: ${2 ** 30}\r\n\r\n`);
    // The server's reset is the expected end here, not a failure.
    socket.on('error', () => {});
    let open = true;
    const closed = new Promise<void>((resolve) =>
      socket.once('close', () => {
        open = false;
        resolve();
      }),
    );
    const chunk = Buffer.alloc(256 * 1024, 0x20);
    let sent = 0;
    while (open && sent < 2 ** 30) {
      sent += chunk.length;
      if (!socket.write(chunk)) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), closed]);
    }
    await closed;
    assert.ok(sent < 64 * 1024 * 1024, `the server read ${sent} bytes before closing`);
    assert.equal((await call(cp.url, 'GET', '/health')).status, 200);
  });

  test('unknown routes → 404 JSON; unknown sandbox → 404 with code 404', async () => {
    const r = await call(cp.url, 'GET', '/nope/nothing', { key });
    assert.equal(r.status, 404);
    assert.equal(r.body.code, 404);
    for (const [m, p] of [['GET', '/sandboxes/iunknown0000000000000'], ['DELETE', '/sandboxes/iunknown0000000000000'], ['POST', '/sandboxes/iunknown0000000000000/connect']] as const) {
      const x = await call(cp.url, m, p, { key, body: m === 'POST' ? { timeout: 10 } : undefined });
      assert.equal(x.status, 404, `${m} ${p}`);
      assert.equal(x.body.code, 404);
    }
  });

  test('unknown template → 404; bad rules → 400; unsupported features → 501 naming them', async () => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'no-such-template' } });
    assert.equal(r.status, 404);
    assert.equal(r.body.code, 404);
    assert.match(r.body.message, /no-such-template/);
    // rules are enforced now: bad ones are a 400 naming each issue, before anything is reserved.
    const egress = await call(cp.url, 'POST', '/v2/sandboxes', {
      key,
      body: { templateID: 'base', network: { rules: { '*': [{ transform: { headers: { 'x-a': 'b' } } }], 'ok.test': [{ transform: { headers: { 'bad header': 'v', 'x-b': '${e2b.secrets.}' } } }] } } },
    });
    assert.equal(egress.status, 400);
    assert.equal(egress.body.error_code, 'invalid_network_policy');
    assert.deepEqual((egress.body.issues as Array<{ code: string }>).map((i) => i.code).sort(), ['invalid_header', 'invalid_placeholder', 'invalid_rule_host']);
    const mask = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', network: { maskRequestHost: 'a b/c' } } });
    assert.equal(mask.status, 400);
    assert.deepEqual((mask.body.issues as Array<{ field: string }>).map((i) => i.field), ['maskRequestHost']);
    const volumes = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', volumeMounts: [{ name: 'v', path: '/data' }] } });
    assert.equal(volumes.status, 404);
    assert.equal(volumes.body.error_code, 'volume_not_found');
  });

  test('a bad network policy → 400 invalid_network_policy naming every issue; nothing is created', async () => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', {
      key,
      body: { templateID: 'base', network: { allowOut: ['10.0.0.300/8', '', `${'a'.repeat(254)}.com`], denyOut: ['example.com', '::1'] } },
    });
    assert.equal(r.status, 400);
    assert.equal(r.body.error_code, 'invalid_network_policy');
    assert.deepEqual(
      r.body.issues.map((i: { code: string; field: string }) => `${i.field}:${i.code}`),
      ['allowOut[0]:invalid_cidr', 'allowOut[1]:invalid_selector', 'allowOut[2]:too_long', 'denyOut[0]:hostname_in_deny', 'denyOut[1]:ipv6_unsupported'],
    );
    const many = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', network: { denyOut: Array.from({ length: 257 }, () => '198.18.0.1') } } });
    assert.equal(many.status, 400);
    assert.ok(many.body.issues.some((i: { code: string; field: string }) => i.code === 'too_many' && i.field === 'denyOut'));
    const listed = await call(cp.url, 'GET', '/v2/sandboxes', { key });
    assert.deepEqual(listed.body, []);
    // An update of an unknown sandbox is a 404, of a bad policy a 400 first (nothing is looked up or sent).
    assert.equal((await call(cp.url, 'PUT', '/sandboxes/iunknown0000000000000/network', { key, body: { denyOut: ['203.0.113.0/24'] } })).status, 404);
    assert.equal((await call(cp.url, 'PUT', '/sandboxes/iunknown0000000000000/network', { key, body: { denyOut: ['203.0.113.0/33'] } })).status, 400);
  });

  test('timeouts above the team maximum → 400 with E2B wording', async () => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 3601 } });
    assert.equal(r.status, 400);
    assert.equal(r.body.message, 'Timeout cannot be greater than 1 hours');
  });

  test('every not-yet-implemented E2B route answers 501 {code, message}', async () => {
    for (const [method, url, what] of NOT_IMPLEMENTED_ROUTES) {
      const path = url.replace(/:[A-Za-z]+/g, 'x1');
      const r = await call(cp.url, method, path, { key, body: ['POST', 'PUT', 'PATCH'].includes(method) ? {} : undefined });
      assert.equal(r.status, 501, `${method} ${path}`);
      assert.deepEqual(r.body, { code: 501, message: `${what} is not implemented yet` });
    }
  });

  test('templates: list, v2 list and alias lookup show the cluster catalogue', async () => {
    const v1 = await call(cp.url, 'GET', '/templates?teamID=whatever', { key });
    assert.equal(v1.status, 200);
    // The cluster's built-ins, oldest first: base, the code interpreter's, the desktop.
    assert.deepEqual(v1.body.map((t: { templateID: string }) => t.templateID), ['base', 'code-interpreter-v1', 'desktop']);
    assert.deepEqual(v1.body[0].aliases, ['base']);
    assert.equal(v1.body[0].buildStatus, 'ready');
    const v2 = await call(cp.url, 'GET', '/v2/templates', { key });
    assert.equal(v2.status, 200);
    assert.deepEqual(v2.body.map((t: { templateID: string }) => t.templateID), ['base', 'code-interpreter-v1', 'desktop']);
    const alias = await call(cp.url, 'GET', '/templates/aliases/base', { key });
    assert.deepEqual(alias.body, { templateID: 'base', public: true });
    const missing = await call(cp.url, 'GET', '/templates/aliases/nope', { key });
    assert.equal(missing.status, 404);
  });

  test('JSON bodies arrive chunked (as the SDK sends them)', async () => {
    const { request } = await import('undici');
    const { Readable } = await import('node:stream');
    const res = await request(new URL('/sandboxes/iunknown0000000000000/timeout', cp.url), {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: Readable.from([Buffer.from('{"time'), Buffer.from('out": 30}')]),
    });
    const body = (await res.body.json()) as { code: number };
    assert.equal(res.statusCode, 404);
    assert.equal(body.code, 404);
  });
});
