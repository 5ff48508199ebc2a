// A real OpenID Connect provider (oidc-provider, certified) on loopback for tests of the cluster's OIDC gate:
// discovery, a JWKS, and a token endpoint issuing JWT access tokens (RFC 9068) by client credentials, with the
// audience (`resource`, RFC 8707) the client asks for. Tests can disable a client (the token endpoint then
// refuses it, as an administrator disabling it at their provider would), change the lifetime of new tokens,
// and rotate the signing key (the provider is rebuilt with a new key behind the same issuer URL).

import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import Provider from 'oidc-provider';

export interface OidcTestClient {
  clientId: string;
  clientSecret: string;
  /** Scopes the client may be given (space-separated). */
  scope: string;
  /** Extra claims in this client's access tokens (a tenant, the teams it may read). */
  claims?: Record<string, unknown>;
}

export interface OidcTestServerOptions {
  clients: OidcTestClient[];
  /** Lifetime of new access tokens; changeable later through `tokenTtlS`. */
  tokenTtlS?: number;
  /** Signing keys to use instead of a fresh one (a second issuer with the same keys tests the `iss` check alone). */
  keys?: JWK[];
  /** Path under the origin, so two servers can differ only in issuer. */
  issuerPath?: string;
}

export const OIDC_TEST_SCOPES = ['cove:cluster', 'cove:read', 'other:scope'];

async function newSigningKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: `k-${Math.random().toString(36).slice(2, 10)}`, alg: 'RS256', use: 'sig' };
}

export class OidcTestServer {
  issuer = '';
  tokenTtlS: number;
  keys: JWK[] = [];
  private readonly clients = new Map<string, OidcTestClient>();
  private readonly disabled = new Map<string, OidcTestClient>();
  private server!: Server;
  private handler!: (req: IncomingMessage, res: ServerResponse) => void;
  /** Requests to the token endpoint, by client (Basic auth's user). */
  readonly tokenRequests: string[] = [];
  /** Requests for the JWKS. */
  jwksRequests = 0;

  constructor(private readonly o: OidcTestServerOptions) {
    this.tokenTtlS = o.tokenTtlS ?? 300;
    for (const c of o.clients) this.clients.set(c.clientId, c);
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      if (req.url?.includes('/jwks')) this.jwksRequests++;
      if (req.url?.includes('/token')) {
        const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')?.[1];
        this.tokenRequests.push(basic ? decodeURIComponent(Buffer.from(basic, 'base64').toString().split(':')[0] ?? '') : '');
      }
      // The provider is mounted under the issuer's path, as behind a reverse proxy.
      const prefix = this.o.issuerPath ?? '';
      if (prefix) {
        if (!req.url?.startsWith(`${prefix}/`)) return void res.writeHead(404).end();
        req.url = req.url.slice(prefix.length);
      }
      this.handler(req, res);
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    const port = (this.server.address() as AddressInfo).port;
    this.issuer = `http://127.0.0.1:${port}${this.o.issuerPath ?? ''}`;
    this.keys = this.o.keys ?? [await newSigningKey()];
    this.build();
    return this;
  }

  private build(): void {
    const clients = this.clients;
    // Clients come from an adapter read on every request, so removing one takes effect at once.
    class Adapter {
      private static readonly store = new Map<string, unknown>();
      constructor(private readonly model: string) {}
      async find(id: string) {
        if (this.model === 'Client') {
          const c = clients.get(id);
          return c
            ? { client_id: c.clientId, client_secret: c.clientSecret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: c.scope }
            : undefined;
        }
        return Adapter.store.get(`${this.model}:${id}`);
      }
      async upsert(id: string, payload: unknown) {
        Adapter.store.set(`${this.model}:${id}`, payload);
      }
      async destroy(id: string) {
        Adapter.store.delete(`${this.model}:${id}`);
      }
      async consume() {}
      async findByUid() {
        return undefined;
      }
      async findByUserCode() {
        return undefined;
      }
      async revokeByGrantId() {}
    }
    const provider = new Provider(this.issuer, {
      adapter: Adapter,
      jwks: { keys: this.keys },
      scopes: OIDC_TEST_SCOPES,
      ttl: { ClientCredentials: () => this.tokenTtlS },
      extraTokenClaims: (_ctx: unknown, token: { clientId?: string }) => (token.clientId ? (clients.get(token.clientId)?.claims ?? {}) : {}),
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => undefined,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resource: string) => ({
            scope: OIDC_TEST_SCOPES.join(' '),
            audience: resource,
            accessTokenTTL: this.tokenTtlS,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          }),
        },
      },
    });
    this.handler = provider.callback();
  }

  /** The token endpoint refuses this client from now on (tokens it already holds live to their `exp`). */
  disableClient(clientId: string): void {
    const c = this.clients.get(clientId);
    if (c) this.disabled.set(clientId, c);
    this.clients.delete(clientId);
  }

  /** Undoes disableClient. */
  enableClient(clientId: string): void {
    const c = this.disabled.get(clientId);
    if (c) this.clients.set(clientId, c);
    this.disabled.delete(clientId);
  }

  /** A new signing key; the old one is dropped from the JWKS unless `keepOld`. */
  async rotateKey(keepOld = false): Promise<void> {
    this.keys = [await newSigningKey(), ...(keepOld ? this.keys : [])];
    this.build();
  }

  /** An access token for `clientId` by client credentials (what a person's tooling or the control plane gets); every scope the client may have unless `scope` narrows it. */
  async token(clientId: string, opts: { resource: string; scope?: string }): Promise<string> {
    const c = this.clients.get(clientId) ?? this.disabled.get(clientId);
    const secret = c?.clientSecret ?? 'unknown-secret';
    const res = await fetch(`${this.issuer}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: opts.resource, ...((opts.scope ?? c?.scope) ? { scope: opts.scope ?? c!.scope } : {}) }),
    });
    const body = (await res.json()) as { access_token?: string; error?: string };
    if (!body.access_token) throw new Error(`token endpoint answered ${res.status}: ${JSON.stringify(body)}`);
    return body.access_token;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
