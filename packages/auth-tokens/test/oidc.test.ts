// The control plane's side of the OIDC gate: ClientCredentialsTokens against a real provider (oidc-provider) and
// against token endpoints that misbehave — one request for callers at once, renewal before expiry, a disabled
// client refused at once, a provider that is down or answers a login page, an endless reply read only so far.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { eventually } from '@cove/test-support/eventually';
import { OidcTestServer } from '@cove/test-support/oidc-server';
import { ClientCredentialsTokens, OidcError } from '../src/oidc.js';

const CLIENT = { clientId: 'vendor', clientSecret: 'vendor-secret-0123456789', scope: 'cove:cluster' };

describe('ClientCredentialsTokens with a real provider', () => {
  let idp: OidcTestServer;
  before(async () => {
    idp = await new OidcTestServer({ clients: [CLIENT], tokenTtlS: 2 }).start();
  });
  after(async () => idp?.close());

  const source = () => new ClientCredentialsTokens({ issuer: idp.issuer, clientId: CLIENT.clientId, clientSecret: CLIENT.clientSecret, scope: 'cove:cluster', params: { resource: 'https://cluster.test' } });

  test('callers at the same time share one request; the token is kept, then renewed before it expires', async () => {
    const tokens = source();
    const asked = idp.tokenRequests.length;
    const got = await Promise.all([tokens.token(), tokens.token(), tokens.token()]);
    assert.equal(new Set(got).size, 1);
    assert.equal(idp.tokenRequests.length - asked, 1);
    assert.equal(await tokens.token(), got[0]);
    const claims = JSON.parse(Buffer.from(got[0]!.split('.')[1]!, 'base64url').toString()) as { exp: number };
    // Renewed before exp (2 s lifetime, of which `exp`'s rounding may take 1 s: at 0.5 s), so a call never carries a
    // token about to lapse.
    await eventually(async () => (await tokens.token()) !== got[0], 10_000, 'a renewed token', 50);
    assert.ok(Date.now() / 1000 < claims.exp, 'renewed before the old token expired');
  });

  test('a disabled client is refused at once, with its own code; enabling it again works', async () => {
    const tokens = source();
    await tokens.token();
    idp.disableClient(CLIENT.clientId);
    tokens.invalidate();
    await assert.rejects(tokens.token(), (err: unknown) => err instanceof OidcError && err.code === 'client_refused' && /invalid_client/.test(err.message));
    idp.enableClient(CLIENT.clientId);
    assert.ok(await tokens.token());
  });

  test('a wrong secret is client_refused', async () => {
    const tokens = new ClientCredentialsTokens({ issuer: idp.issuer, clientId: CLIENT.clientId, clientSecret: 'wrong-secret' });
    await assert.rejects(tokens.token(), (err: unknown) => err instanceof OidcError && err.code === 'client_refused');
  });
});

describe('ClientCredentialsTokens against a misbehaving token endpoint', () => {
  let server: Server;
  let base: string;
  let mode: 'ok' | 'down' | 'endless' | 'html' = 'ok';
  let sent = 0;
  before(async () => {
    server = createServer((req, res) => {
      if (req.url === '/.well-known/openid-configuration') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ issuer: base, jwks_uri: `${base}/jwks`, token_endpoint: `${base}/token` }));
      }
      if (mode === 'down') return void res.writeHead(503).end();
      if (mode === 'html') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login</html>');
      res.writeHead(200, { 'content-type': 'application/json' });
      if (mode === 'ok') return void res.end(JSON.stringify({ access_token: 'opaque-token', token_type: 'Bearer', expires_in: 60 }));
      res.on('error', () => undefined);
      const pump = () => {
        while (sent < 64 * 1024 * 1024) {
          sent += 65536;
          if (!res.write(' '.repeat(65536))) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  test('a provider that is down or answers a login page is issuer_unavailable; once it answers, there is a token', async () => {
    const tokens = new ClientCredentialsTokens({ issuer: base, clientId: 'c', clientSecret: 's' });
    mode = 'down';
    await assert.rejects(tokens.token(), (err: unknown) => err instanceof OidcError && err.code === 'issuer_unavailable');
    mode = 'html';
    await assert.rejects(tokens.token(), (err: unknown) => err instanceof OidcError && err.code === 'issuer_unavailable');
    mode = 'ok';
    assert.equal(await tokens.token(), 'opaque-token');
  });

  test('an endless reply is read only so far', async () => {
    mode = 'endless';
    const tokens = new ClientCredentialsTokens({ issuer: base, clientId: 'c', clientSecret: 's' });
    await assert.rejects(tokens.token(), (err: unknown) => err instanceof OidcError && err.code === 'issuer_unavailable');
    assert.ok(sent < 16 * 1024 * 1024, `read ${sent} bytes`);
  });

  test('an issuer that is not https off loopback is refused before anything is sent', () => {
    assert.throws(() => new ClientCredentialsTokens({ issuer: 'http://idp.example.com', clientId: 'c', clientSecret: 's' }), /must be an https/);
  });
});
