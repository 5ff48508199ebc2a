// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
// The customer's identity provider gates the cluster (docs/operating.md): a real OpenID provider (oidc-provider,
// started here), the real edge as its own process configured with it, the real control plane obtaining its own
// tokens by client credentials, and the wire-level node fixture behind the edge. Proves that the cluster token no
// longer opens the cluster API or the control link, that every kind of bad token is a clear 401/403 JSON, that
// key rotation is followed, that people read the public routes with their own tokens while SDK grants still work,
// and that disabling the vendor's client cuts the control plane off within one token lifetime while the sandbox
// keeps running and its traffic keeps flowing.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { deriveNodeToken } from '@cove/auth-tokens';
import { NodeRegistry } from '@cove/contracts/edge';
import { SandboxService } from '@cove/contracts/orchestrator';
import { eventually } from '@cove/test-support/eventually';
import { OidcTestServer } from '@cove/test-support/oidc-server';
import { SignJWT, UnsecuredJWT } from 'jose';
import { request } from 'undici';
import { ConfigError, loadConfig } from '../src/config.js';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { nodeInfo, startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { EDGE_MAIN, spawnEdge, type EdgeProcess } from './fixtures/edge-process.js';
import { freePort } from '@cove/test-support/free-port';

const CLUSTER_TOKEN = 'oidc-gate-cluster-token-0123456789';
const NODE_CREDENTIAL_KEY = 'oidc-gate-node-credential-key-0123456789abcdef';
const NODE_ID = 'oidc-node-1';
const NODE_TOKEN = deriveNodeToken(NODE_CREDENTIAL_KEY, NODE_ID);
const COLLECTOR_TOKEN = 'oidc-gate-collector-token-0123456789';
const AUDIENCE = 'https://cluster.cove.test';
/** Lifetime of every token the provider issues here: the cut-off must happen within it. */
const TTL_S = 4;

const VENDOR = { clientId: 'cove-vendor', clientSecret: 'vendor-secret-0123456789abcdef', scope: 'cove:cluster' };
const OPS = { clientId: 'customer-ops', clientSecret: 'ops-secret-0123456789abcdef', scope: 'cove:cluster cove:read' };
const DASHBOARD = { clientId: 'dashboard', clientSecret: 'dashboard-secret-0123456789abcdef', scope: 'cove:read' };

/** A real HTTP server standing in for the collector's query API (docs/observability.md) and recording what it was asked. */
async function startCollector(): Promise<{ url: string; asked: Array<Record<string, string>>; server: Server }> {
  const asked: Array<Record<string, string>> = [];
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://c');
    if (req.headers.authorization !== `Bearer ${COLLECTOR_TOKEN}`) return void res.writeHead(401).end('{}');
    asked.push({ path: u.pathname, ...Object.fromEntries(u.searchParams) });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ logs: [], logEntries: [{ timestamp: new Date().toISOString(), level: 'info', message: 'process started', fields: {} }] }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, asked, server };
}

/** The node's sandbox proxy: what sandbox traffic reaches once the edge routed it. */
async function startNodeProxy(): Promise<{ url: string; hits: string[]; server: Server }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(String(req.headers['e2b-sandbox-id']));
    res.writeHead(200, { 'content-type': 'text/plain' }).end('sandbox answered');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits, server };
}

describe('the customer identity provider gates the cluster', { skip: existsSync(EDGE_MAIN) ? false : 'edge not built' }, () => {
  let idp: OidcTestServer;
  let otherIdp: OidcTestServer;
  let edge: EdgeProcess;
  let edgeUrl: string;
  let publicUrl: string;
  let trafficUrl: string;
  let node: FakeCluster;
  let proxy: Awaited<ReturnType<typeof startNodeProxy>>;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let cp: RunningControlPlane;
  let key: string;
  let teamId: string;
  /** The client list and the edge's storage, removed afterwards. */
  let dir: string;
  let clusterId: string;
  let sessions: Http2SessionManager;
  let heartbeat: () => Promise<unknown>;
  let beating: NodeJS.Timeout | undefined;

  const nodes = (authorization?: string) =>
    call(edgeUrl, 'GET', '/v1/nodes', { headers: authorization === undefined ? {} : { authorization } });
  const bearer = (t: string) => `Bearer ${t}`;

  before(async () => {
    idp = await new OidcTestServer({ clients: [VENDOR, OPS, DASHBOARD], tokenTtlS: TTL_S }).start();
    // Same keys, another issuer: a token from it verifies by signature and must still be refused for its `iss`.
    otherIdp = await new OidcTestServer({ clients: [OPS], tokenTtlS: TTL_S, keys: idp.keys, issuerPath: '/elsewhere' }).start();
    node = await startFakeCluster(NODE_TOKEN);
    const fakeNode = node.addNode(NODE_ID);
    proxy = await startNodeProxy();
    collector = await startCollector();
    const [apiPort, trafficPort, publicPort] = [await freePort(), await freePort(), await freePort()];
    edgeUrl = `http://127.0.0.1:${apiPort}`;
    publicUrl = `http://127.0.0.1:${publicPort}`;
    trafficUrl = `http://127.0.0.1:${trafficPort}`;

    dir = mkdtempSync(join(tmpdir(), 'cove-oidc-gate-'));
    const clientsFile = join(dir, 'oidc-clients.json');
    writeFileSync(
      clientsFile,
      JSON.stringify({ [`cluster-${edgeUrl}`]: { issuer: idp.issuer, clientId: VENDOR.clientId, clientSecret: VENDOR.clientSecret, scope: 'cove:cluster', params: { resource: AUDIENCE } } }),
    );
    cp = await startControlPlane({ COVE_CLUSTER_OIDC_CLIENTS: clientsFile, COVE_RECONCILE_INTERVAL_MS: '200', COVE_RECONCILE_GRACE_MS: '300' });
    // The reconciler and evictor run as in production: they must not take a refusal for a lost sandbox.
    cp.cp.startBackground();

    // Its ports are fixed before it starts: the control plane's client list names the edge's URL.
    edge = await spawnEdge({
      COVE_EDGE_API_PORT: String(apiPort),
      COVE_EDGE_TRAFFIC_PORT: String(trafficPort),
      COVE_EDGE_PUBLIC_PORT: String(publicPort),
      COVE_CLUSTER_TOKEN: CLUSTER_TOKEN,
      COVE_NODE_CREDENTIAL_KEY: NODE_CREDENTIAL_KEY,
      COVE_STORAGE_URL: `file://${join(dir, 'storage')}`,
      COVE_UPLOAD_SECRET: 'oidc-gate-upload-secret-0123456789abcdef',
      COVE_CONTROL_PLANE_URL: cp.url,
      COVE_COLLECTOR_URL: collector.url,
      COVE_COLLECTOR_TOKEN: COLLECTOR_TOKEN,
      COVE_OIDC_ISSUER: idp.issuer,
      COVE_OIDC_AUDIENCE: AUDIENCE,
      COVE_OIDC_CLOCK_TOLERANCE_S: '0',
      COVE_OIDC_JWKS_COOLDOWN_MS: '0',
    });

    sessions = new Http2SessionManager(edgeUrl);
    const registry = createClient(NodeRegistry, createGrpcTransport({ baseUrl: edgeUrl, sessionManager: sessions }));
    heartbeat = () =>
      registry.heartbeat(
        { info: nodeInfo(fakeNode), rpcUrl: node.endpoint, proxyUrl: proxy.url, sandboxIds: [...fakeNode.sandboxes.keys()] },
        { headers: { authorization: `Bearer ${NODE_TOKEN}` } },
      );
    await heartbeat();
    // Beat on as an orchestrator does, so the node stays healthy however long the suite runs.
    beating = setInterval(() => void heartbeat().catch(() => undefined), 1000);
    ({ key, teamId, clusterId } = await setupTeam(cp.url, edgeUrl, CLUSTER_TOKEN, { publicUrl }));
  });

  after(async () => {
    clearInterval(beating);
    sessions?.abort();
    await cp?.close();
    await edge?.stop();
    await node?.close();
    proxy?.server.close();
    collector?.server.close();
    await idp?.close();
    await otherIdp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the control plane reaches the gated cluster with a token it obtained by client credentials', async () => {
    const listed = await call(cp.url, 'GET', `/admin/clusters/${clusterId}/nodes`, { admin: ADMIN_TOKEN });
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    assert.deepEqual(listed.body.map((n: { nodeId: string }) => n.nodeId), [NODE_ID]);
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 300 } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const created = node.calls.find((c) => c.method === 'Create' && c.sandboxId === r.body.sandboxID);
    assert.equal(created?.authorization, `Bearer ${NODE_TOKEN}`, 'the edge swapped the provider token for the node token');
    assert.ok(idp.tokenRequests.includes(VENDOR.clientId), 'the control plane asked the provider for its token');
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${r.body.sandboxID}`, { key })).status, 204);
  });

  test('the cluster token, which the vendor holds, opens neither the cluster API nor the control link', async () => {
    assert.deepEqual(await nodes(bearer(CLUSTER_TOKEN)).then((r) => [r.status, r.body.error]), [401, 'token_malformed']);
    const viaApiKey = await call(edgeUrl, 'GET', '/v1/nodes', { headers: { 'x-api-key': CLUSTER_TOKEN } });
    assert.deepEqual([viaApiKey.status, viaApiKey.body.error], [401, 'token_missing']);
    const link = createClient(SandboxService, createGrpcTransport({ baseUrl: edgeUrl, sessionManager: sessions }));
    await assert.rejects(link.list({}, { headers: { authorization: bearer(CLUSTER_TOKEN), 'cove-node-id': NODE_ID } }), (err: unknown) => {
      assert.equal(ConnectError.from(err).code, Code.Unauthenticated);
      return true;
    });
    assert.ok(!node.calls.some((c) => c.method === 'List' && c.authorization === bearer(CLUSTER_TOKEN)), 'nothing reached the node');
    // The customer's own operator token does open the control link.
    const ops = await idp.token(OPS.clientId, { resource: AUDIENCE, scope: 'cove:cluster' });
    const listed = await link.list({}, { headers: { authorization: bearer(ops), 'cove-node-id': NODE_ID } });
    assert.ok(Array.isArray(listed.sandboxes));
  });

  test('bad tokens are clear 401/403 JSON: scope, audience, issuer, malformed, oversized, unsigned, symmetric, too long-lived, expired', async () => {
    const ok = await nodes(bearer(await idp.token(OPS.clientId, { resource: AUDIENCE })));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const cases: Array<[string, string, number, string]> = [
      ['no cluster scope', await idp.token(DASHBOARD.clientId, { resource: AUDIENCE }), 403, 'token_scope'],
      ['wrong audience', await idp.token(OPS.clientId, { resource: 'https://another-cluster.test' }), 401, 'token_audience'],
      ['wrong issuer', await otherIdp.token(OPS.clientId, { resource: AUDIENCE }), 401, 'token_issuer'],
      ['not a JWT', 'not-a-jwt', 401, 'token_malformed'],
      ['two parts', 'abc.def', 401, 'token_malformed'],
      ['encrypted form', 'a.b.c.d.e', 401, 'token_malformed'],
      ['garbage header', 'e30x.e30.e30', 401, 'token_malformed'],
      ['unsigned', new UnsecuredJWT({ sub: 'x', scope: 'cove:cluster' }).setIssuer(idp.issuer).setAudience(AUDIENCE).setExpirationTime('1m').encode() + 'sig', 401, 'token_malformed'],
      [
        'HS256 (symmetric)',
        await new SignJWT({ scope: 'cove:cluster' }).setProtectedHeader({ alg: 'HS256' }).setSubject('x').setIssuer(idp.issuer).setAudience(AUDIENCE).setExpirationTime('1m').sign(new TextEncoder().encode('0123456789abcdef0123456789abcdef')),
        401,
        'token_malformed',
      ],
      ['oversized', `${'a'.repeat(9000)}.b.c`, 401, 'token_too_large'],
    ];
    idp.tokenTtlS = 7200;
    cases.push(['lives longer than allowed', await idp.token(OPS.clientId, { resource: AUDIENCE }), 401, 'token_lifetime']);
    idp.tokenTtlS = TTL_S;
    for (const [what, token, status, error] of cases) {
      const r = await nodes(bearer(token));
      assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error, error, `${what}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, status);
      assert.equal(typeof r.body.message, 'string');
      assert.equal(r.headers['content-type'], 'application/json');
    }
    // A forged signature over a valid token's claims.
    const valid = await idp.token(OPS.clientId, { resource: AUDIENCE });
    const [h, p] = valid.split('.');
    const forged = await nodes(bearer(`${h}.${p}.${Buffer.from('x'.repeat(256)).toString('base64url')}`));
    assert.deepEqual([forged.status, forged.body.error], [401, 'token_signature']);

    // Expiry: a token accepted now is refused once its one-second life is over (checked, not slept on).
    idp.tokenTtlS = 1;
    const short = await idp.token(OPS.clientId, { resource: AUDIENCE });
    idp.tokenTtlS = TTL_S;
    await eventually(async () => {
      const r = await nodes(bearer(short));
      return r.status === 401 && r.body.error === 'token_expired';
    }, 10_000, 'the short token to be refused as expired');
  });

  test('key rotation: a new key is fetched on first sight; a key the provider dropped stops working', async () => {
    const before = await idp.token(OPS.clientId, { resource: AUDIENCE });
    assert.equal((await nodes(bearer(before))).status, 200);
    await idp.rotateKey(true); // new key signs, the old one is still published
    const during = await idp.token(OPS.clientId, { resource: AUDIENCE });
    assert.notEqual(JSON.parse(Buffer.from(during.split('.')[0]!, 'base64url').toString()).kid, JSON.parse(Buffer.from(before.split('.')[0]!, 'base64url').toString()).kid);
    assert.equal((await nodes(bearer(during))).status, 200, 'the edge fetched the new key');
    assert.equal((await nodes(bearer(before))).status, 200, 'the old key is still published');
    await idp.rotateKey(false); // the old keys are withdrawn
    const afterRotation = await idp.token(OPS.clientId, { resource: AUDIENCE });
    assert.equal((await nodes(bearer(afterRotation))).status, 200);
    const old = await nodes(bearer(before));
    assert.deepEqual([old.status, old.body.error], [401, 'token_signature']);
    // The control plane's own cached token was signed by a withdrawn key: it gets a new one and carries on.
    const listed = await call(cp.url, 'GET', `/admin/clusters/${clusterId}/nodes`, { admin: ADMIN_TOKEN });
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
  });

  test('people and dashboards read the public routes with their own tokens; SDK callers keep their grants', async () => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 300 } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = r.body.sandboxID as string;
    const dash = await idp.token(DASHBOARD.clientId, { resource: AUDIENCE });
    const logs = await call(publicUrl, 'GET', `/sandboxes/${id}/logs?teamID=${teamId}`, { headers: { authorization: bearer(dash) } });
    assert.equal(logs.status, 200, JSON.stringify(logs.body));
    assert.equal(logs.body.logEntries[0].message, 'process started');
    assert.equal(collector.asked.at(-1)?.teamID, teamId, 'the collector is asked for the named team only');
    const noTeam = await call(publicUrl, 'GET', `/sandboxes/${id}/logs`, { headers: { authorization: bearer(dash) } });
    assert.equal(noTeam.status, 400);
    const vendorScoped = await call(publicUrl, 'GET', `/sandboxes/${id}/logs?teamID=${teamId}`, { headers: { authorization: bearer(await idp.token(VENDOR.clientId, { resource: AUDIENCE })) } });
    assert.deepEqual([vendorScoped.status, vendorScoped.body.error], [403, 'token_scope']);
    const wrongAud = await call(publicUrl, 'GET', `/sandboxes/${id}/logs?teamID=${teamId}`, { headers: { authorization: bearer(await idp.token(DASHBOARD.clientId, { resource: 'https://x.test' })) } });
    assert.deepEqual([wrongAud.status, wrongAud.body.error], [401, 'token_audience']);
    // The SDK's way: the control plane's 307 with a grant, followed.
    const redirect = await call(cp.url, 'GET', `/sandboxes/${id}/logs`, { key });
    assert.equal(redirect.status, 307, JSON.stringify(redirect.body));
    const followed = await request(String(redirect.headers.location));
    assert.equal(followed.statusCode, 200, await followed.body.text());
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key })).status, 204);
  });

  test('disabling the vendor client cuts the control plane off within one token lifetime; the sandbox runs on and its traffic flows', async () => {
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 600 } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = r.body.sandboxID as string;
    const traffic = () => request(trafficUrl, { headers: { host: `49983-${id}.cove.test` } }).then(async (res) => ({ status: res.statusCode, text: await res.body.text() }));
    assert.deepEqual(await traffic(), { status: 200, text: 'sandbox answered' });
    // The reconciler checks the sandbox against its node's list while the control plane still has access.
    const listsBefore = node.calls.filter((c) => c.method === 'List').length;
    await eventually(() => node.calls.filter((c) => c.method === 'List').length > listsBefore, 10_000, 'a reconcile round listing the node');

    idp.disableClient(VENDOR.clientId);
    const cutAt = Date.now();
    const refusals = () => idp.tokenRequests.filter((c) => c === VENDOR.clientId).length;
    const refusedBefore = refusals();
    const refused = await eventually(async () => {
      const res = await call(cp.url, 'GET', `/admin/clusters/${clusterId}/nodes`, { admin: ADMIN_TOKEN });
      return res.status === 502 ? res : undefined;
    }, (TTL_S + 5) * 1000, 'the control plane to be cut off');
    assert.ok(Date.now() - cutAt <= (TTL_S + 2) * 1000, `cut off after ${Date.now() - cutAt} ms, more than one token lifetime`);
    assert.equal(refused.body.error_code, 'cluster_access_refused');
    assert.equal(refused.body.reason, 'client_refused');
    const create = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 60 } });
    assert.equal(create.status, 502, JSON.stringify(create.body));
    assert.equal(create.body.error_code, 'cluster_access_refused');

    // Several reconcile rounds run into the refusal (each asks the provider again) and disturb nothing: a cluster
    // that refuses the control plane is not a cluster whose sandboxes are gone.
    await eventually(() => refusals() >= refusedBefore + 5, 15_000, 'reconcile rounds against the disabled client');
    await heartbeat();
    assert.ok(node.nodes.get(NODE_ID)!.sandboxes.has(id), 'the sandbox still runs on its node');
    const record = await call(cp.url, 'GET', `/sandboxes/${id}`, { key });
    assert.equal(record.status, 200, JSON.stringify(record.body));
    assert.equal(record.body.state, 'running');
    assert.deepEqual(await traffic(), { status: 200, text: 'sandbox answered' }, 'sandbox traffic still flows through the edge');
    const ops = await idp.token(OPS.clientId, { resource: AUDIENCE });
    const route = await call(edgeUrl, 'GET', `/v1/sandboxes/${id}`, { headers: { authorization: bearer(ops) } });
    assert.deepEqual(route.body, { sandboxId: id, nodeId: NODE_ID }, "the customer's own operators still reach the cluster");

    // The customer enables the client again: the control plane carries on by itself.
    idp.enableClient(VENDOR.clientId);
    await eventually(async () => (await call(cp.url, 'GET', `/admin/clusters/${clusterId}/nodes`, { admin: ADMIN_TOKEN })).status === 200, 15_000, 'the control plane to be let in again');
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key })).status, 204);
  });
});

describe('COVE_CLUSTER_OIDC_CLIENTS', () => {
  const load = (content: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'cove-oidc-config-'));
    const file = join(dir, 'clients.json');
    writeFileSync(file, content);
    try {
      return loadConfig({ COVE_ADMIN_TOKEN: ADMIN_TOKEN, COVE_CLUSTER_OIDC_CLIENTS: file });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const refusal = (content: string): string => {
    try {
      load(content);
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.issues.join('\n');
    }
    return '';
  };

  test('is off unless set, and reads a valid file', () => {
    assert.deepEqual(loadConfig({ COVE_ADMIN_TOKEN: ADMIN_TOKEN }).clusterOidcClients, {});
    const c = load(JSON.stringify({ prod: { issuer: 'https://idp.example.com/realms/acme', clientId: 'cove', clientSecret: 's', scope: 'cove:cluster', params: { audience: 'x' } } }));
    assert.equal(c.clusterOidcClients.prod?.clientId, 'cove');
  });

  test('refuses a broken file with the setting and the field named', () => {
    assert.match(refusal('{not json'), /^COVE_CLUSTER_OIDC_CLIENTS: cannot read .* as JSON/);
    assert.match(refusal(JSON.stringify({ prod: { issuer: 'http://idp.example.com', clientId: 'c', clientSecret: 's' } })), /COVE_CLUSTER_OIDC_CLIENTS: prod\.issuer: must be an https/);
    assert.match(refusal(JSON.stringify({ prod: { issuer: 'https://idp.example.com', clientId: 'c' } })), /prod\.clientSecret/);
    assert.match(refusal(JSON.stringify({ prod: { issuer: 'https://idp.example.com', clientId: 'c', clientSecret: 's', secret: 'typo' } })), /prod: Unrecognized key/);
    assert.throws(() => loadConfig({ COVE_ADMIN_TOKEN: ADMIN_TOKEN, COVE_CLUSTER_OIDC_CLIENTS: '/nonexistent/clients.json' }), ConfigError);
  });
});
