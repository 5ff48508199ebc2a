// The edge's OIDC gate in-process, with a real OpenID provider (oidc-provider) started here: required claims,
// the team claim on the public routes, grants switched off, and providers that are down or hostile (a discovery
// document naming another issuer, an endless JWKS) — each a clear JSON refusal while the edge keeps serving.
// The whole flow with the control plane is packages/control-plane/test/oidc-gate.test.ts.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { OidcTestServer } from '@cove/test-support/oidc-server';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { request } from 'undici';
import { ConfigError, loadConfig } from '../src/index.js';
import { CLUSTER_TOKEN, startEdge, type RunningEdge } from './fixtures/edge-harness.js';

const AUDIENCE = 'https://cluster.test';
const TEAM = 'team-a';
const COLLECTOR_TOKEN = 'collector-token-0123456789abcdef';

async function get(url: string, token?: string) {
  const res = await request(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  const text = await res.body.text();
  return { status: res.statusCode, type: res.headers['content-type'], body: JSON.parse(text) as { code: number; error?: string; message: string } & Record<string, unknown> };
}

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ url: string; server: Server }> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('edge OIDC gate', () => {
  let idp: OidcTestServer;
  let edge: RunningEdge;
  let collector: { url: string; server: Server; asked: string[] };

  before(async () => {
    idp = await new OidcTestServer({
      clients: [
        { clientId: 'acme-ops', clientSecret: 'acme-ops-secret-0123456789', scope: 'cove:cluster cove:read', claims: { tenant: 'acme', cove_teams: [TEAM] } },
        { clientId: 'acme-all', clientSecret: 'acme-all-secret-0123456789', scope: 'cove:read', claims: { tenant: 'acme' } },
        { clientId: 'intruder', clientSecret: 'intruder-secret-0123456789', scope: 'cove:cluster cove:read', claims: { tenant: 'globex', cove_teams: [TEAM] } },
      ],
    }).start();
    const asked: string[] = [];
    collector = {
      asked,
      ...(await listen((req, res) => {
        const u = new URL(req.url ?? '/', 'http://c');
        asked.push(u.searchParams.get('teamID') ?? '');
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ logs: [], logEntries: [] }));
      })),
    };
    edge = await startEdge(
      {
        COVE_EDGE_PUBLIC_PORT: '0',
        COVE_CONTROL_PLANE_URL: 'http://127.0.0.1:9',
        COVE_COLLECTOR_URL: collector.url,
        COVE_COLLECTOR_TOKEN: COLLECTOR_TOKEN,
        COVE_OIDC_ISSUER: idp.issuer,
        COVE_OIDC_AUDIENCE: `https://other.test, ${AUDIENCE}`,
        COVE_OIDC_REQUIRED_CLAIMS: '{"tenant":"acme"}',
        COVE_OIDC_TEAM_CLAIM: 'cove_teams',
        COVE_PUBLIC_GRANTS: 'off',
        COVE_PUBLIC_CORS_ORIGINS: 'https://dashboard.acme.test',
      },
      { clusterId: 'c1' },
    );
  });

  after(async () => {
    await edge?.close();
    await idp?.close();
    collector?.server.close();
  });

  it('refuses a token without the required claim, even with every scope', async () => {
    const r = await get(`${edge.apiUrl}/v1/nodes`, await idp.token('intruder', { resource: AUDIENCE }));
    assert.deepEqual([r.status, r.body.error, r.type], [403, 'token_claims', 'application/json']);
    assert.equal((await get(`${edge.apiUrl}/v1/nodes`, await idp.token('acme-ops', { resource: AUDIENCE }))).status, 200);
  });

  it('limits a token to the teams its team claim names; build status needs a token for every team', async () => {
    const ops = await idp.token('acme-ops', { resource: AUDIENCE });
    const mine = await get(`${edge.publicUrl}/sandboxes/abc123/logs?teamID=${TEAM}`, ops);
    assert.equal(mine.status, 200, JSON.stringify(mine.body));
    assert.equal(collector.asked.at(-1), TEAM);
    const asked = collector.asked.length;
    const other = await get(`${edge.publicUrl}/sandboxes/abc123/logs?teamID=team-b`, ops);
    assert.deepEqual([other.status, other.body.error], [403, 'token_claims']);
    const many = await get(`${edge.publicUrl}/sandboxes/metrics?sandbox_ids=abc123&teamID=team-b`, ops);
    assert.deepEqual([many.status, many.body.error], [403, 'token_claims']);
    const status = await get(`${edge.publicUrl}/templates/t1/builds/b1/status?teamID=${TEAM}`, ops);
    assert.deepEqual([status.status, status.body.error], [403, 'token_claims']);
    assert.equal(collector.asked.length, asked, 'nothing refused reached the collector');
    // A token without a team claim (the team claim is configured) covers no team at all.
    const all = await get(`${edge.publicUrl}/sandboxes/abc123/logs?teamID=${TEAM}`, await idp.token('acme-all', { resource: AUDIENCE }));
    assert.deepEqual([all.status, all.body.error], [403, 'token_claims']);
    const repeated = await get(`${edge.publicUrl}/sandboxes/abc123/logs?teamID=${TEAM}&teamID=team-b`, ops);
    assert.equal(repeated.status, 400);
  });

  it('/metrics takes provider tokens with the cluster scope, not the cluster token', async () => {
    const byToken = await get(`${edge.apiUrl}/metrics`, CLUSTER_TOKEN);
    assert.deepEqual([byToken.status, byToken.body.error], [401, 'token_malformed']);
    const reader = await get(`${edge.apiUrl}/metrics`, await idp.token('acme-all', { resource: AUDIENCE }));
    assert.deepEqual([reader.status, reader.body.error], [403, 'token_scope']);
    const res = await request(`${edge.apiUrl}/metrics`, { headers: { authorization: `Bearer ${await idp.token('acme-ops', { resource: AUDIENCE })}` } });
    assert.equal(res.statusCode, 200);
    assert.match(await res.body.text(), /cove_edge_nodes|cove_http_requests_total/);
  });

  it('a browser dashboard at the configured origin may call the public routes; no other origin may', async () => {
    const preflight = (origin: string) =>
      request(`${edge.publicUrl}/sandboxes/abc123/logs?teamID=${TEAM}`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
    const ok = await preflight('https://dashboard.acme.test');
    await ok.body.text();
    assert.equal(ok.statusCode, 204);
    assert.equal(ok.headers['access-control-allow-origin'], 'https://dashboard.acme.test');
    assert.equal(ok.headers['access-control-allow-headers'], 'authorization');
    assert.equal(ok.headers['access-control-allow-credentials'], undefined);
    const evil = await preflight('https://evil.test');
    assert.equal(evil.statusCode, 403);
    assert.equal(((await evil.body.json()) as { error: string }).error, 'cors_origin');
    assert.equal(evil.headers['access-control-allow-origin'], undefined);
    const ops = await idp.token('acme-ops', { resource: AUDIENCE });
    const fromDashboard = await request(`${edge.publicUrl}/sandboxes/abc123/logs?teamID=${TEAM}`, { headers: { origin: 'https://dashboard.acme.test', authorization: `Bearer ${ops}` } });
    await fromDashboard.body.text();
    assert.equal(fromDashboard.headers['access-control-allow-origin'], 'https://dashboard.acme.test');
    const fromEvil = await request(`${edge.publicUrl}/sandboxes/abc123/logs?teamID=${TEAM}`, { headers: { origin: 'https://evil.test', authorization: `Bearer ${ops}` } });
    await fromEvil.body.text();
    assert.equal(fromEvil.headers['access-control-allow-origin'], undefined, 'a browser on another site cannot read the answer');
  });

  it('with grants off, a grant opens nothing', async () => {
    const { privateKey } = await generateKeyPair('EdDSA');
    const grant = await new SignJWT({ scope: 'sandbox.logs', sandbox_ids: ['abc123'] })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setSubject(TEAM)
      .setIssuer('cove-control-plane')
      .setAudience('c1')
      .setIssuedAt()
      .setExpirationTime('1m')
      .sign(privateKey);
    const r = await get(`${edge.publicUrl}/sandboxes/abc123/logs?cove_grant=${grant}`);
    assert.deepEqual([r.status, r.body.error], [401, 'token_missing']);
  });

  it('the cluster token is refused on the REST API and a wrong scheme is malformed', async () => {
    const r = await request(`${edge.apiUrl}/v1/nodes`, { headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } });
    assert.equal(r.statusCode, 401);
    assert.equal(((await r.body.json()) as { error: string }).error, 'token_malformed');
    assert.equal((await get(`${edge.apiUrl}/v1/nodes`, CLUSTER_TOKEN)).body.error, 'token_malformed');
    assert.notEqual((await request(`${edge.apiUrl}/health`)).statusCode, 401, 'health needs no token');
  });
});

describe('edge OIDC gate against a provider that is down or hostile', () => {
  it('answers 503 issuer_unavailable for an unreachable provider, and keeps serving', async () => {
    const gone = await listen((_req, res) => res.end());
    gone.server.close();
    const edge = await startEdge({ COVE_OIDC_ISSUER: gone.url, COVE_OIDC_AUDIENCE: AUDIENCE });
    try {
      const r = await get(`${edge.apiUrl}/v1/nodes`, 'a.b.c');
      assert.equal(r.status, 401, 'a token that cannot be one is refused before anything is fetched');
      const { privateKey } = await generateKeyPair('RS256');
      const t = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'k' }).setSubject('s').setIssuer(gone.url).setAudience(AUDIENCE).setExpirationTime('1m').sign(privateKey);
      const down = await get(`${edge.apiUrl}/v1/nodes`, t);
      assert.deepEqual([down.status, down.body.error], [503, 'issuer_unavailable']);
      assert.equal((await request(`${edge.apiUrl}/health`)).statusCode, 503, 'the edge still answers (no node yet)');
    } finally {
      await edge.close();
    }
  });

  it('refuses a discovery document naming another issuer, and reads an endless JWKS only so far', async () => {
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    let mode: 'liar' | 'endless' | 'honest' = 'liar';
    let sent = 0;
    const hostile = await listen((req, res) => {
      const self = `http://127.0.0.1:${(hostile.server.address() as AddressInfo).port}`;
      if (req.url === '/.well-known/openid-configuration') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ issuer: mode === 'liar' ? 'https://someone-else.test' : self, jwks_uri: `${self}/jwks` }));
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      if (mode === 'honest') return void res.end(JSON.stringify({ keys: [jwk] }));
      // An endless key set: the edge must stop reading, not buffer it all.
      res.write('{"keys":[');
      const pump = () => {
        while (sent < 64 * 1024 * 1024) {
          sent += 65536;
          if (!res.write(`${'{"kty":"oct"},'.repeat(4681)}`)) return void res.once('drain', pump);
        }
        res.end(']}');
      };
      res.on('error', () => undefined);
      pump();
    });
    const edge = await startEdge({ COVE_OIDC_ISSUER: hostile.url, COVE_OIDC_AUDIENCE: AUDIENCE, COVE_OIDC_JWKS_COOLDOWN_MS: '0' });
    try {
      const token = await new SignJWT({ scope: 'cove:cluster' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setSubject('s').setIssuer(hostile.url).setAudience(AUDIENCE).setExpirationTime('1m').sign(privateKey);
      const liar = await get(`${edge.apiUrl}/v1/nodes`, token);
      assert.deepEqual([liar.status, liar.body.error], [503, 'issuer_unavailable']);
      mode = 'endless';
      const endless = await get(`${edge.apiUrl}/v1/nodes`, token);
      assert.deepEqual([endless.status, endless.body.error], [503, 'issuer_unavailable']);
      assert.ok(sent < 16 * 1024 * 1024, `the edge read ${sent} bytes of an endless key set`);
      // The same provider behaving: the next request succeeds; nothing was restarted.
      mode = 'honest';
      const ok = await get(`${edge.apiUrl}/v1/nodes`, token);
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
    } finally {
      await edge.close();
      hostile.server.closeAllConnections();
      hostile.server.close();
    }
  });
});

describe('edge OIDC configuration', () => {
  const base = { COVE_CLUSTER_TOKEN: 'c'.repeat(20), COVE_NODE_CREDENTIAL_KEY: 'n'.repeat(32), COVE_SANDBOX_DOMAIN: 'cove.localhost', COVE_UPLOAD_SECRET: 'u'.repeat(32) };
  const issues = (env: Record<string, string>): string[] => {
    try {
      loadConfig({ ...base, ...env });
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.issues;
    }
    return [];
  };

  it('is off by default and parses lists and claims', () => {
    assert.equal(loadConfig(base).oidc, undefined);
    assert.equal(loadConfig(base).publicGrants, true);
    const c = loadConfig({ ...base, COVE_OIDC_ISSUER: 'https://idp.example.com/realms/acme', COVE_OIDC_AUDIENCE: 'a, b', COVE_OIDC_CLUSTER_SCOPES: 'x y', COVE_OIDC_REQUIRED_CLAIMS: '{"tenant":"acme","n":1}' });
    assert.deepEqual(c.oidc?.audience, ['a', 'b']);
    assert.deepEqual(c.oidc?.clusterScopes, ['x', 'y']);
    assert.deepEqual(c.oidc?.readScopes, ['cove:read']);
    assert.deepEqual(c.oidc?.requiredClaims, { tenant: 'acme', n: 1 });
  });

  it('refuses plain-http issuers off loopback, half configurations and malformed claims, naming the field', () => {
    assert.match(issues({ COVE_OIDC_ISSUER: 'http://idp.example.com', COVE_OIDC_AUDIENCE: 'a' }).join('\n'), /^COVE_OIDC_ISSUER: must be an https/m);
    assert.match(issues({ COVE_OIDC_ISSUER: 'https://idp.example.com' }).join('\n'), /^COVE_OIDC_ISSUER: .*set together/m);
    assert.match(issues({ COVE_OIDC_ISSUER: 'https://idp.example.com', COVE_OIDC_AUDIENCE: 'a', COVE_OIDC_REQUIRED_CLAIMS: '{"a":{"b":1}}' }).join('\n'), /^COVE_OIDC_REQUIRED_CLAIMS/m);
    assert.match(issues({ COVE_OIDC_ISSUER: 'https://idp.example.com', COVE_OIDC_AUDIENCE: 'a', COVE_OIDC_REQUIRED_CLAIMS: 'not json' }).join('\n'), /^COVE_OIDC_REQUIRED_CLAIMS: must be a JSON object/m);
    assert.match(issues({ COVE_PUBLIC_GRANTS: 'off' }).join('\n'), /^COVE_PUBLIC_GRANTS/m);
    assert.match(issues({ COVE_PUBLIC_CORS_ORIGINS: 'https://a.test/path' }).join('\n'), /^COVE_PUBLIC_CORS_ORIGINS.*: each must be an origin/m);
    assert.match(issues({ COVE_PUBLIC_CORS_ORIGINS: '*' }).join('\n'), /^COVE_PUBLIC_CORS_ORIGINS/m);
    assert.match(issues({ COVE_OIDC_ISSUER: 'https://idp.example.com?x=1', COVE_OIDC_AUDIENCE: 'a' }).join('\n'), /^COVE_OIDC_ISSUER/m);
  });
});
