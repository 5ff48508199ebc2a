// Tokens from the customer's own OpenID Connect provider (docs/operating.md, "The customer's identity provider"):
// the edge verifies them (discovery + JWKS, issuer, audience, expiry, required scopes and claims) and the control
// plane obtains its own by client credentials. A separate entry point (`@cove/auth-tokens/oidc`) so components
// that only compare secrets (envd, bundled) do not carry jose and undici.
//
// The provider is the customer's, but its replies are still read with bounds (size, time) and checked against the
// shapes they must have: a broken or hostile endpoint yields a clear refusal, never an unbounded read or a crash.

import {
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { request } from 'undici';
import { z } from 'zod';

/** Largest token looked at; real access tokens are a few KiB. */
export const MAX_TOKEN_BYTES = 8192;
/** Largest discovery document, JWKS or token-endpoint reply read. */
const MAX_REPLY_BYTES = 256 * 1024;
/** Asymmetric algorithms only: a symmetric one would let anyone holding the shared secret mint tokens. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

/** Why a token was refused (structured, end to end: the edge puts it in its JSON errors as `error`). */
export type OidcErrorCode =
  | 'token_missing'
  | 'token_too_large'
  | 'token_malformed'
  | 'token_signature'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'token_lifetime'
  | 'token_issuer'
  | 'token_audience'
  | 'token_claims'
  | 'token_scope'
  | 'issuer_unavailable'
  | 'client_refused';

const STATUS: Record<OidcErrorCode, 401 | 403 | 503> = {
  token_missing: 401,
  token_too_large: 401,
  token_malformed: 401,
  token_signature: 401,
  token_expired: 401,
  token_not_yet_valid: 401,
  token_lifetime: 401,
  token_issuer: 401,
  token_audience: 401,
  token_claims: 403,
  token_scope: 403,
  issuer_unavailable: 503,
  client_refused: 401,
};

export class OidcError extends Error {
  readonly status: 401 | 403 | 503;
  constructor(
    readonly code: OidcErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'OidcError';
    this.status = STATUS[code];
  }
}

/** Loopback issuers may be plain http (tests, a provider on the same host); any other must be https. */
export function isAcceptableIssuerUrl(raw: string): boolean {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return false;
  }
  if (u.search || u.hash || u.username || u.password) return false;
  if (u.protocol === 'https:') return true;
  return u.protocol === 'http:' && (u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]');
}

async function getBounded(url: string, init: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string; timeoutMs: number }): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }> {
  const res = await request(url, {
    method: init.method ?? 'GET',
    headers: init.headers,
    body: init.body,
    headersTimeout: init.timeoutMs,
    bodyTimeout: init.timeoutMs,
    signal: AbortSignal.timeout(init.timeoutMs),
  });
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of res.body as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_REPLY_BYTES) {
      res.body.destroy();
      throw new Error(`${url} answered more than ${MAX_REPLY_BYTES} bytes`);
    }
    chunks.push(c);
  }
  return { status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') };
}

const Discovery = z.object({
  issuer: z.string().min(1).max(2048),
  jwks_uri: z.string().url().max(2048),
  token_endpoint: z.string().url().max(2048).optional(),
});
export type Discovery = z.infer<typeof Discovery>;

/**
 * The provider's discovery document (`<issuer>/.well-known/openid-configuration`), fetched once and kept; a
 * failed fetch is retried by the next caller. The document must name exactly this issuer (OIDC Discovery §4.3)
 * and point at endpoints this module would accept as an issuer URL (https, or loopback http).
 */
export class OidcDiscovery {
  private doc: Promise<Discovery> | undefined;

  constructor(
    readonly issuer: string,
    private readonly timeoutMs = 5_000,
  ) {
    if (!isAcceptableIssuerUrl(issuer)) throw new Error(`OIDC issuer ${issuer} must be an https:// URL (http:// only on loopback) without query or fragment`);
  }

  get(): Promise<Discovery> {
    if (!this.doc) {
      this.doc = this.fetch();
      this.doc.catch(() => (this.doc = undefined));
    }
    return this.doc;
  }

  private async fetch(): Promise<Discovery> {
    const url = `${this.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    let res;
    try {
      res = await getBounded(url, { headers: { accept: 'application/json' }, timeoutMs: this.timeoutMs });
    } catch (err) {
      throw new OidcError('issuer_unavailable', `the identity provider's discovery document cannot be read (${(err as Error).message})`, { cause: err });
    }
    if (res.status !== 200) throw new OidcError('issuer_unavailable', `the identity provider's discovery document answered ${res.status}`);
    const parsed = Discovery.safeParse(safeJson(res.text));
    if (!parsed.success) throw new OidcError('issuer_unavailable', "the identity provider's discovery document is not one");
    const d = parsed.data;
    if (d.issuer !== this.issuer) throw new OidcError('issuer_unavailable', `the discovery document names issuer ${JSON.stringify(d.issuer.slice(0, 200))}, not the configured ${this.issuer}`);
    for (const u of [d.jwks_uri, d.token_endpoint]) {
      if (u !== undefined && !isAcceptableIssuerUrl(u.split('?')[0]!)) throw new OidcError('issuer_unavailable', `the discovery document points at ${u.slice(0, 200)}, which is not https`);
    }
    return d;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A bounded fetch for jose's remote JWKS (jose's own reads the whole reply). */
function boundedJwksFetch(timeoutMs: number) {
  return async (url: string): Promise<Response> => {
    const r = await getBounded(url, { headers: { accept: 'application/json' }, timeoutMs });
    return new Response(r.text, { status: r.status, headers: { 'content-type': 'application/json' } });
  };
}

export interface OidcVerifierOptions {
  /** Exact `iss` of accepted tokens; discovery is read from `<issuer>/.well-known/openid-configuration`. */
  issuer: string;
  /** Accepted `aud` values (one of them must be in the token). */
  audience: string[];
  /** Claims every token must carry with exactly this value (an array claim must contain it). */
  requiredClaims?: Record<string, string | number | boolean>;
  /** Tokens living longer than this (exp − now) are refused, so a disabled client is cut off within it. */
  maxLifetimeS?: number;
  clockToleranceS?: number;
  timeoutMs?: number;
  /** After a JWKS fetch, an unknown key id triggers another only after this long (jose's cooldown). */
  jwksCooldownMs?: number;
  /** Keys are fetched again after this long even when every key id is known (a removed key stops working). */
  jwksMaxAgeMs?: number;
}

/** What a verified token says about its holder. */
export interface OidcPrincipal {
  subject: string;
  /** `client_id` or `azp`, when present. */
  clientId: string | undefined;
  scopes: ReadonlySet<string>;
  claims: JWTPayload;
}

/** Scopes of a token: the `scope` string (RFC 9068, space-separated) or an `scp` array (some providers). */
function scopesOf(p: JWTPayload): Set<string> {
  const out = new Set<string>();
  if (typeof p.scope === 'string') for (const s of p.scope.split(' ')) if (s) out.add(s);
  if (Array.isArray(p.scp)) {
    for (const s of p.scp) if (typeof s === 'string') out.add(s);
  } else if (typeof p.scp === 'string') {
    for (const s of p.scp.split(' ')) if (s) out.add(s);
  }
  return out;
}

export class OidcVerifier {
  readonly discovery: OidcDiscovery;
  private keys: Promise<JWTVerifyGetKey> | undefined;

  constructor(private readonly o: OidcVerifierOptions) {
    if (o.audience.length === 0) throw new Error('OIDC audience must name at least one value');
    this.discovery = new OidcDiscovery(o.issuer, o.timeoutMs);
  }

  private keySet(): Promise<JWTVerifyGetKey> {
    if (!this.keys) {
      const timeoutMs = this.o.timeoutMs ?? 5_000;
      this.keys = this.discovery.get().then((d) =>
        createRemoteJWKSet(new URL(d.jwks_uri), {
          timeoutDuration: timeoutMs,
          cooldownDuration: this.o.jwksCooldownMs ?? 30_000,
          cacheMaxAge: this.o.jwksMaxAgeMs ?? 600_000,
          [customFetch]: boundedJwksFetch(timeoutMs) as never,
        }),
      );
      this.keys.catch(() => (this.keys = undefined));
    }
    return this.keys;
  }

  /** Verifies `token` and that it carries every scope in `scopes`; throws OidcError otherwise. */
  async verify(token: string | undefined, scopes: readonly string[]): Promise<OidcPrincipal> {
    if (!token) throw new OidcError('token_missing', 'missing bearer token from the cluster identity provider');
    if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) throw new OidcError('token_too_large', `bearer token larger than ${MAX_TOKEN_BYTES} bytes`);
    // Shape first: a compact JWS (three parts) whose header names an asymmetric algorithm. Nothing is fetched for
    // a token that cannot be one.
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) throw new OidcError('token_malformed', 'bearer token is not a signed JWT');
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new OidcError('token_malformed', 'bearer token is not a signed JWT');
    }
    if (!alg || !ALGORITHMS.includes(alg)) throw new OidcError('token_malformed', `bearer token algorithm ${String(alg).slice(0, 16)} is not accepted`);
    const keys = await this.keySet();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: this.o.issuer,
        audience: this.o.audience,
        algorithms: ALGORITHMS,
        requiredClaims: ['exp', 'sub'],
        clockTolerance: this.o.clockToleranceS ?? 30,
      }));
    } catch (err) {
      throw refusal(err);
    }
    const maxLifetimeS = this.o.maxLifetimeS ?? 3600;
    if (payload.exp! - Date.now() / 1000 > maxLifetimeS) throw new OidcError('token_lifetime', `bearer token lives longer than ${maxLifetimeS} s`);
    for (const [name, want] of Object.entries(this.o.requiredClaims ?? {})) {
      const have = payload[name];
      const ok = Array.isArray(have) ? have.includes(want) : have === want;
      if (!ok) throw new OidcError('token_claims', `bearer token lacks the required claim ${name}`);
    }
    const granted = scopesOf(payload);
    const missing = scopes.filter((s) => !granted.has(s));
    if (missing.length > 0) throw new OidcError('token_scope', `bearer token lacks the scope ${missing.join(' ')}`);
    const clientId = typeof payload.client_id === 'string' ? payload.client_id : typeof payload.azp === 'string' ? payload.azp : undefined;
    return { subject: payload.sub!, clientId, scopes: granted, claims: payload };
  }
}

function refusal(err: unknown): OidcError {
  if (err instanceof OidcError) return err;
  if (err instanceof joseErrors.JWTExpired) return new OidcError('token_expired', 'bearer token has expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return new OidcError('token_issuer', 'bearer token is from another issuer');
    if (err.claim === 'aud') return new OidcError('token_audience', 'bearer token is not for this cluster (audience)');
    if (err.claim === 'nbf' || err.claim === 'iat') return new OidcError('token_not_yet_valid', 'bearer token is not valid yet');
    return new OidcError('token_malformed', `bearer token claim ${err.claim} is missing or invalid`);
  }
  if (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid) {
    return new OidcError('issuer_unavailable', "the identity provider's keys cannot be fetched", { cause: err });
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWSSignatureVerificationFailed || err instanceof joseErrors.JOSEAlgNotAllowed) {
    return new OidcError('token_signature', 'bearer token is not signed by the identity provider');
  }
  if (err instanceof joseErrors.JOSEError) return new OidcError('token_malformed', 'bearer token is not a valid JWT');
  // A network error under jose's fetch.
  return new OidcError('issuer_unavailable', "the identity provider's keys cannot be fetched", { cause: err });
}

const TokenReply = z.object({
  access_token: z.string().min(1).max(MAX_TOKEN_BYTES),
  token_type: z.string().regex(/^bearer$/i),
  expires_in: z.coerce.number().int().positive().max(86_400).optional(),
});
const TokenErrorReply = z.object({ error: z.string().max(64), error_description: z.string().max(512).optional() });

export interface ClientCredentialsOptions {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** Space-separated scopes to ask for; omitted = the client's defaults. */
  scope?: string;
  /** Extra form parameters of the token request (`resource` per RFC 8707, or a provider's `audience`). */
  params?: Record<string, string>;
  timeoutMs?: number;
}

/**
 * Access tokens of one client, by the client-credentials grant (RFC 6749 §4.4, client_secret_basic). One token
 * is kept until shortly before it expires; callers at the same time share one request. Nothing outlives a
 * refused request: once the provider disables the client, no new token exists, and the last one ends at its `exp`.
 */
export class ClientCredentialsTokens {
  private readonly discovery: OidcDiscovery;
  private current: { token: string; renewAtMs: number; expiresAtMs: number } | undefined;
  private pending: Promise<string> | undefined;

  constructor(private readonly o: ClientCredentialsOptions) {
    this.discovery = new OidcDiscovery(o.issuer, o.timeoutMs);
  }

  /** A valid access token; throws OidcError (`client_refused`, `issuer_unavailable`) when none can be had. */
  async token(): Promise<string> {
    const now = Date.now();
    if (this.current && now < this.current.renewAtMs) return this.current.token;
    this.pending ??= this.fetch().finally(() => (this.pending = undefined));
    try {
      return await this.pending;
    } catch (err) {
      // A provider that cannot be reached for a renewal: the token in hand still serves until it expires.
      if (err instanceof OidcError && err.code === 'issuer_unavailable' && this.current && Date.now() < this.current.expiresAtMs) return this.current.token;
      throw err;
    }
  }

  /** Forget the kept token (the cluster refused it, e.g. after a key rotation): the next call asks for a new one. */
  invalidate(token?: string): void {
    if (token === undefined || this.current?.token === token) this.current = undefined;
  }

  private async fetch(): Promise<string> {
    const d = await this.discovery.get();
    if (!d.token_endpoint) throw new OidcError('issuer_unavailable', 'the identity provider has no token endpoint');
    // Extra parameters first, so none of them can change the grant type or the scope asked for.
    const form = new URLSearchParams({ ...(this.o.params ?? {}), grant_type: 'client_credentials', ...(this.o.scope ? { scope: this.o.scope } : {}) });
    const basic = Buffer.from(`${encodeURIComponent(this.o.clientId)}:${encodeURIComponent(this.o.clientSecret)}`).toString('base64');
    const started = Date.now();
    let res;
    try {
      res = await getBounded(d.token_endpoint, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: form.toString(),
        timeoutMs: this.o.timeoutMs ?? 5_000,
      });
    } catch (err) {
      throw new OidcError('issuer_unavailable', `the identity provider's token endpoint cannot be reached (${(err as Error).message})`, { cause: err });
    }
    const json = safeJson(res.text);
    if (res.status !== 200) {
      const e = TokenErrorReply.safeParse(json);
      this.current = undefined;
      if (res.status >= 500 || !e.success) throw new OidcError('issuer_unavailable', `the identity provider's token endpoint answered ${res.status}`);
      throw new OidcError('client_refused', `the identity provider refused the client credentials: ${e.data.error}${e.data.error_description ? ` (${e.data.error_description})` : ''}`);
    }
    const t = TokenReply.safeParse(json);
    if (!t.success) throw new OidcError('issuer_unavailable', "the identity provider's token reply is not one");
    // Counted from when the request was sent, less a second: providers round `exp` down to whole seconds, so the
    // token may lapse up to a second before `expires_in` says. Renewed when 10% of that is left (at least 1 s, at
    // most 60 s; half of a very short one).
    const lifetimeMs = Math.max(0, (t.data.expires_in ?? 300) * 1000 - 1_000);
    const margin = Math.min(lifetimeMs / 2, Math.max(1_000, Math.min(60_000, lifetimeMs / 10)));
    this.current = { token: t.data.access_token, expiresAtMs: started + lifetimeMs, renewAtMs: started + lifetimeMs - margin };
    return t.data.access_token;
  }
}
