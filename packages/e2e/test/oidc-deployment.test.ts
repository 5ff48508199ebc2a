// Issue 15: a deployment whose cluster is gated by the customer's own OpenID provider, with real sandboxes. A real
// provider (`oidc-provider`) runs in this process; `cove up --oidc-issuer …` (the CLI as a process) starts a
// deployment of its own (port offset 400, one node, names cove400/cv4-, data under /var/lib/cove-400) whose edge
// accepts only that provider's tokens and whose control plane gets its own by client credentials. Through the
// unchanged SDK: a sandbox runs a command and reads a file. The customer disables the control plane's client:
// the control plane is cut off within one (8 s) token lifetime while the sandbox runs on and its SDK traffic
// (envd through the edge, with the sandbox's own token) keeps flowing; enabling the client again restores it.
// Bad tokens on the cluster API are clear JSON 401s and restart nothing.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPrivateKey, randomBytes, sign, type JsonWebKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { Sandbox } from 'e2b';
import { OidcTestServer } from '@cove/test-support/oidc-server';
import { eventually, parseEnv, repoRoot } from './deployment.js';

const STATE = join(repoRoot, '.cove', 'oidc');
const FLAGS = ['--state-dir', STATE, '--port-offset', '400', '--nodes', '1'];
/** Lifetime of the provider's tokens: "one token lifetime" is this long. */
const TTL_S = 8;
const AUDIENCE = 'https://cluster.acme.test';
/** The control plane's client (the vendor's), and the customer's own operators' client. */
const VENDOR = { clientId: 'cove-vendor', clientSecret: randomBytes(16).toString('hex'), scope: 'cove:cluster' };
const OPS = { clientId: 'acme-ops', clientSecret: randomBytes(16).toString('hex'), scope: 'cove:cluster' };

let idp: OidcTestServer;
/** The same keys behind another issuer URL: only its `iss` is wrong. */
let otherIdp: OidcTestServer;

function cove(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string }> {
  // Asynchronous: the provider the deployment asks runs in this process's event loop.
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, out }));
  });
}

const oidcFlags = (secret = VENDOR.clientSecret) => ({
  args: ['--oidc-issuer', idp.issuer, '--oidc-audience', AUDIENCE, '--oidc-client-id', VENDOR.clientId],
  // The secret as a variable: arguments show in process listings.
  env: { COVE_OIDC_CLIENT_SECRET: secret },
});

const topology = () => JSON.parse(readFileSync(join(STATE, 'topology.json'), 'utf8')) as { ports: { controlPlane: number; edgeApi: number; edgeTraffic: number } };
const pids = () => Object.fromEntries(['control-plane', 'edge', 'orchestrator'].map((n) => [n, (JSON.parse(readFileSync(join(STATE, 'run', `${n}.pid`), 'utf8')) as { pid: number }).pid]));

async function get(url: string, headers: Record<string, string>): Promise<{ status: number; body: Record<string, unknown>; type: string | undefined }> {
  const res = await request(url, { headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const text = await res.body.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { unparsed: text.slice(0, 200) };
  }
  return { status: res.statusCode, body, type: res.headers['content-type'] as string | undefined };
}

/** The edge's cluster API (GET /v1/nodes) with this bearer token. */
const edgeNodes = (token: string) => get(`http://127.0.0.1:${topology().ports.edgeApi}/v1/nodes`, { authorization: `Bearer ${token}` });

/** A control-plane → cluster call the vendor makes (the cluster's nodes, through the control link). */
function vendorCall() {
  const secrets = JSON.parse(readFileSync(join(STATE, 'secrets.json'), 'utf8')) as { adminToken: string };
  const { clusterId } = JSON.parse(readFileSync(join(STATE, 'state.json'), 'utf8')) as { clusterId: string };
  return get(`http://127.0.0.1:${topology().ports.controlPlane}/admin/clusters/${clusterId}/nodes`, { 'x-admin-token': secrets.adminToken });
}

/** A token signed with the provider's own key, with claims of the test's choosing (to reach one check alone). */
function forged(claims: { expInS: number; iss?: string; aud?: string }): string {
  const jwk = idp.keys[0]!;
  const now = Math.floor(Date.now() / 1000);
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = part({ alg: 'RS256', kid: jwk.kid, typ: 'at+jwt' });
  const body = part({ iss: claims.iss ?? idp.issuer, aud: claims.aud ?? AUDIENCE, sub: OPS.clientId, client_id: OPS.clientId, scope: 'cove:cluster', iat: now + claims.expInS - TTL_S, exp: now + claims.expInS });
  const signature = sign('sha256', Buffer.from(`${head}.${body}`), createPrivateKey({ key: jwk as JsonWebKey, format: 'jwk' })).toString('base64url');
  return `${head}.${body}.${signature}`;
}

before(async () => {
  idp = await new OidcTestServer({ clients: [VENDOR, OPS], tokenTtlS: TTL_S }).start();
  otherIdp = await new OidcTestServer({ clients: [OPS], keys: idp.keys, issuerPath: '/other', tokenTtlS: TTL_S }).start();
  // A crashed earlier run's leftovers go first (down is idempotent).
  const pre = await cove(['down', '--purge', ...FLAGS]);
  assert.equal(pre.code, 0, pre.out);
});

after(async () => {
  // Whatever happened, this deployment leaves nothing behind (and is stopped while its provider still answers).
  await cove(['down', '--purge', ...FLAGS]);
  await otherIdp?.close();
  await idp?.close();
});

test('cove up refuses incomplete or refused OIDC settings before it starts anything', { timeout: 60_000 }, async () => {
  const partial = await cove(['up', ...FLAGS, '--oidc-issuer', idp.issuer]);
  assert.equal(partial.code, 1, partial.out);
  assert.match(partial.out, /invalid_oidc_config: OIDC mode needs --oidc-audience, --oidc-client-id, --oidc-client-secret/);
  const f = oidcFlags('not-the-secret');
  const refused = await cove(['up', ...FLAGS, ...f.args], f.env);
  assert.equal(refused.code, 1, refused.out);
  assert.match(refused.out, /invalid_oidc_config: .*\(client_refused\)/);
  assert.ok(!existsSync(join(STATE, 'run')), 'nothing was started (no run dir)');
});

test('a deployment gated by the customer provider: SDK works; disabling the vendor client cuts the control plane off within one token lifetime while the sandbox runs on; bad tokens are clear 401s', { timeout: 900_000 }, async (t) => {
  const f = oidcFlags();
  const up = await cove(['up', ...FLAGS, ...f.args, '--warm-pool', 'base=1', '--code-interpreter-wait', '0', '--desktop-wait', '0'], f.env);
  assert.equal(up.code, 0, up.out);
  // `up`'s readiness checks read the gated cluster API with the vendor client's tokens.
  assert.ok(idp.tokenRequests.includes(VENDOR.clientId), 'the CLI and control plane asked the provider for tokens');
  assert.ok(!readFileSync(join(STATE, 'env'), 'utf8').includes(VENDOR.clientSecret), 'the client secret is not in the client env file');

  // The cluster token, which the vendor's control plane holds, opens nothing; the customer's tokens do.
  const secrets = JSON.parse(readFileSync(join(STATE, 'secrets.json'), 'utf8')) as { clusterToken: string };
  const byClusterToken = await edgeNodes(secrets.clusterToken);
  assert.equal(byClusterToken.status, 401, JSON.stringify(byClusterToken.body));
  const ops = await edgeNodes(await idp.token(OPS.clientId, { resource: AUDIENCE }));
  assert.equal(ops.status, 200, JSON.stringify(ops.body));
  assert.equal((ops.body as unknown as unknown[]).length, 1, 'the one node');

  // The unchanged SDK, through the control plane and the edge (cleartext traffic port, as deployment() does).
  Object.assign(process.env, parseEnv(join(STATE, 'env')), { E2B_SANDBOX_URL: `http://127.0.0.1:${topology().ports.edgeTraffic}` });
  const sbx = await Sandbox.create({ timeoutMs: 300_000 });
  assert.equal((await sbx.commands.run('echo gated')).stdout, 'gated\n');
  await sbx.files.write('/home/user/kept.txt', 'before the cut');
  assert.equal(await sbx.files.read('/home/user/kept.txt'), 'before the cut');
  assert.equal((await vendorCall()).status, 200, 'the control plane reaches the cluster');
  const running = pids();

  // Bad tokens on the cluster API: each a clear JSON 401 naming why. The forged ones are signed with the
  // provider's real key, so each fails one check only — a fresh one passes (the test can tell them apart).
  assert.equal((await edgeNodes(forged({ expInS: 60 }))).status, 200, 'a forged token with valid claims passes: the cases below fail on their one claim');
  const cases: Array<[string, string, string]> = [
    ['malformed', 'not-a-jwt', 'token_malformed'],
    ['oversized', `${'a'.repeat(9000)}.b.c`, 'token_too_large'],
    ['wrong issuer', await otherIdp.token(OPS.clientId, { resource: AUDIENCE }), 'token_issuer'],
    ['wrong audience', await idp.token(OPS.clientId, { resource: 'https://another-cluster.test' }), 'token_audience'],
    // Past the edge's clock tolerance (30 s).
    ['expired', forged({ expInS: -120 }), 'token_expired'],
    ['forged issuer claim', forged({ expInS: 60, iss: 'https://evil.test' }), 'token_issuer'],
  ];
  for (const [what, token, error] of cases) {
    const r = await edgeNodes(token);
    assert.equal(r.status, 401, `${what}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error, error, `${what}: ${JSON.stringify(r.body)}`);
    assert.equal(typeof r.body.message, 'string', what);
    assert.match(r.type ?? '', /^application\/json/, what);
  }

  // The customer disables the vendor's client at their provider.
  idp.disableClient(VENDOR.clientId);
  const cutAt = Date.now();
  const refused = await eventually(async () => {
    const r = await vendorCall();
    return r.status === 502 ? r : undefined;
  }, (TTL_S + 10) * 1000, 'the control plane to be cut off', 250);
  const cutAfterMs = Date.now() - cutAt;
  t.diagnostic(`control plane cut off ${cutAfterMs} ms after the client was disabled (token lifetime ${TTL_S} s)`);
  assert.ok(cutAfterMs <= (TTL_S + 2) * 1000, `cut off after ${cutAfterMs} ms, more than one token lifetime`);
  assert.equal(refused.body.error_code, 'cluster_access_refused');
  assert.equal(refused.body.reason, 'client_refused');
  await assert.rejects(Sandbox.create({ timeoutMs: 60_000 }), 'a new sandbox is refused while the vendor is cut off');

  // The sandbox runs on and its SDK traffic flows (envd through the edge, with the sandbox's own token).
  assert.equal(await sbx.isRunning(), true);
  assert.equal((await sbx.commands.run('echo still')).stdout, 'still\n');
  assert.equal(await sbx.files.read('/home/user/kept.txt'), 'before the cut');
  await sbx.files.write('/home/user/during.txt', 'during the cut');
  // The customer's own operators still reach the cluster.
  assert.equal((await edgeNodes(await idp.token(OPS.clientId, { resource: AUDIENCE }))).status, 200);
  const listed = await cove(['status', '--json', ...FLAGS]);
  assert.equal(listed.code, 0, listed.out);
  const sandboxes = (JSON.parse(listed.out) as { sandboxes: Array<{ sandboxId: string }> }).sandboxes;
  assert.deepEqual(sandboxes.map((s) => s.sandboxId), [sbx.sandboxId], 'the refused create started nothing; the sandbox is still there');

  // The customer enables the client again: the control plane carries on by itself.
  idp.enableClient(VENDOR.clientId);
  await eventually(async () => (await vendorCall()).status === 200, 30_000, 'the control plane to be let in again', 250);
  const second = await Sandbox.create({ timeoutMs: 120_000 });
  assert.equal((await second.commands.run('echo back')).stdout, 'back\n');
  await second.kill();
  assert.equal(await sbx.files.read('/home/user/during.txt'), 'during the cut');
  assert.deepEqual(pids(), running, 'no component restarted through bad tokens, the cut and its end');

  // `up` again with the same settings changes nothing; with a client the provider refuses it fails before
  // touching anything; without OIDC it restarts the edge and control plane on the cluster token, and the
  // sandbox runs on through all three.
  const again = await cove(['up', ...FLAGS, ...f.args, '--warm-pool', 'base=1', '--code-interpreter-wait', '0', '--desktop-wait', '0'], f.env);
  assert.equal(again.code, 0, again.out);
  assert.deepEqual(pids(), running, 'the same settings restart nothing');
  const bad = oidcFlags('not-the-secret');
  const refusedUp = await cove(['up', ...FLAGS, ...bad.args, '--warm-pool', 'base=1', '--code-interpreter-wait', '0', '--desktop-wait', '0'], bad.env);
  assert.equal(refusedUp.code, 1, refusedUp.out);
  assert.match(refusedUp.out, /invalid_oidc_config: .*\(client_refused\)/);
  assert.deepEqual(pids(), running, 'a refused client changes nothing');
  assert.equal((await sbx.commands.run('echo unchanged')).stdout, 'unchanged\n');
  const off = await cove(['up', ...FLAGS, '--warm-pool', 'base=1', '--code-interpreter-wait', '0', '--desktop-wait', '0']);
  assert.equal(off.code, 0, off.out);
  assert.match(off.out, /edge: restarting for the cluster token \(OIDC off\)/);
  const now = pids();
  assert.notEqual(now.edge, running.edge);
  assert.notEqual(now['control-plane'], running['control-plane']);
  assert.equal(now.orchestrator, running.orchestrator, 'the node and its sandboxes were not touched');
  assert.equal((await edgeNodes(secrets.clusterToken)).status, 200, 'the cluster token opens the cluster API again');
  assert.ok(!existsSync(join(STATE, 'oidc-clients.json')), "the control plane's client file is gone");
  await eventually(async () => (await sbx.commands.run('echo after')).stdout === 'after\n', 30_000, 'the sandbox to answer through the restarted edge', 250);
  assert.equal(await sbx.files.read('/home/user/during.txt'), 'during the cut');
  await sbx.kill();
});
