// Who may use the cluster API (REST `/v1/*`) and the control link: the cluster token, or — when the customer
// configures their identity provider (COVE_OIDC_ISSUER) — only access tokens from that provider carrying the
// cluster scopes (docs/operating.md, "The customer's identity provider"). With OIDC on, the cluster token opens
// neither: the control plane holds it (the cluster uses it to call the control plane), so accepting it here would
// let the vendor in after the customer disabled the vendor's client.

import { bearerToken, tokensEqual } from '@cove/auth-tokens';
import { OidcError, type OidcErrorCode, type OidcPrincipal, type OidcVerifier } from '@cove/auth-tokens/oidc';

/** A refusal, in the edge's error vocabulary: `error` is the structured code every JSON error carries. */
export interface AuthRefusal {
  status: 401 | 403 | 503;
  error: OidcErrorCode | 'cluster_token_missing' | 'cluster_token_invalid';
  message: string;
}

export type AuthResult = { ok: true; principal: OidcPrincipal | undefined } | ({ ok: false } & AuthRefusal);

export interface ClusterAuthOptions {
  clusterToken: string;
  /** Set = OIDC mode: tokens of this provider with these scopes, and nothing else. */
  oidc?: { verifier: OidcVerifier; scopes: readonly string[] } | undefined;
}

type Headers = Record<string, string | string[] | undefined>;

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export class ClusterAuth {
  constructor(private readonly o: ClusterAuthOptions) {}

  get oidcMode(): boolean {
    return this.o.oidc !== undefined;
  }

  async check(headers: Headers): Promise<AuthResult> {
    const auth = one(headers.authorization);
    if (this.o.oidc) {
      // Only `authorization: Bearer`: X-API-Key is how the cluster token is sent, never an OIDC token.
      const token = auth === undefined ? undefined : bearerToken(auth);
      if (auth !== undefined && token === undefined) {
        return { ok: false, status: 401, error: 'token_malformed', message: 'authorization must be "Bearer <token from the cluster identity provider>"' };
      }
      try {
        return { ok: true, principal: await this.o.oidc.verifier.verify(token, this.o.oidc.scopes) };
      } catch (err) {
        if (err instanceof OidcError) return { ok: false, status: err.status, error: err.code, message: err.message };
        throw err;
      }
    }
    const apiKey = one(headers['x-api-key']);
    const given = apiKey || (auth ? (bearerToken(auth) ?? auth) : undefined);
    if (!given) return { ok: false, status: 401, error: 'cluster_token_missing', message: 'missing cluster token (authorization: Bearer or X-API-Key)' };
    if (!tokensEqual(given, this.o.clusterToken)) return { ok: false, status: 403, error: 'cluster_token_invalid', message: 'invalid cluster token' };
    return { ok: true, principal: undefined };
  }
}
