// Verifies the grants the control plane signs for the public port (docs/observability.md): an EdDSA JWT checked
// against the control plane's JWKS (fetched, cached and refreshed by jose on an unknown key id), with this
// cluster's id as audience — learnt once from the control plane with the cluster token — and the configured
// issuer. A grant is read only after its signature, issuer, audience and expiry check out.

import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { request } from 'undici';
import { z } from 'zod';

export type GrantScope = 'sandbox.logs' | 'sandbox.metrics' | 'build.logs' | 'build.status';

const BuildState = z.object({
  status: z.enum(['waiting', 'building', 'ready', 'error']),
  reason: z.object({ message: z.string().max(1024), step: z.string().max(64).optional() }).optional(),
});

/** The claims a verified grant carries; anything else in it is ignored. */
const Claims = z.object({
  sub: z.string().min(1).max(128),
  scope: z.enum(['sandbox.logs', 'sandbox.metrics', 'build.logs', 'build.status']),
  sandbox_ids: z.array(z.string().min(1).max(128)).max(100).optional(),
  template_id: z.string().min(1).max(256).optional(),
  build_id: z.string().min(1).max(128).optional(),
  build_state: BuildState.optional(),
  node_id: z.string().min(1).max(128).optional(),
});
export type Grant = z.infer<typeof Claims>;

/** Why a grant was refused: 401 for a missing or unverifiable one, 403 for a valid one that does not cover the request. */
export class GrantRefused extends Error {
  constructor(
    readonly status: 401 | 403 | 503,
    message: string,
    /** Structured reason, for refusals of an OIDC token (`token_expired`, …). */
    readonly error?: string,
  ) {
    super(message);
    this.name = 'GrantRefused';
  }
}

export interface GrantVerifierOptions {
  controlPlaneUrl: string;
  clusterToken: string;
  issuer: string;
  /** Tests: a key set of their own instead of the control plane's JWKS. */
  keys?: JWTVerifyGetKey;
  /** Tests: the cluster id instead of asking the control plane. */
  clusterId?: string;
}

export class GrantVerifier {
  private readonly keys: JWTVerifyGetKey;
  private clusterId: string | undefined;

  constructor(private readonly o: GrantVerifierOptions) {
    this.keys = o.keys ?? createRemoteJWKSet(new URL(`${o.controlPlaneUrl}/.well-known/cove-grant-jwks.json`), { timeoutDuration: 5_000, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
    this.clusterId = o.clusterId;
  }

  /** This cluster's id as the control plane knows it (the grants' audience); asked once, retried until it answers. */
  private async audience(): Promise<string> {
    if (this.clusterId) return this.clusterId;
    let res;
    try {
      res = await request(`${this.o.controlPlaneUrl}/cluster/v1/identity`, {
        headers: { authorization: `Bearer ${this.o.clusterToken}` },
        headersTimeout: 5_000,
        bodyTimeout: 5_000,
      });
    } catch {
      throw new GrantRefused(503, 'the control plane cannot be reached to verify grants; try again');
    }
    const text = await readCapped(res.body, 4096);
    const parsed = res.statusCode === 200 ? z.object({ clusterId: z.string().min(1).max(128) }).safeParse(safeJson(text)) : undefined;
    if (!parsed?.success) throw new GrantRefused(503, `the control plane did not say which cluster this is (status ${res.statusCode})`);
    this.clusterId = parsed.data.clusterId;
    return this.clusterId;
  }

  async verify(token: string | null): Promise<Grant> {
    if (!token) throw new GrantRefused(401, 'missing cove_grant: ask the API (E2B_API_URL) for this resource; it redirects here with a grant');
    if (token.length > 8192) throw new GrantRefused(401, 'invalid cove_grant');
    const audience = await this.audience();
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.keys, { issuer: this.o.issuer, audience, algorithms: ['EdDSA'], requiredClaims: ['exp', 'iat', 'sub'], maxTokenAge: '90s', clockTolerance: 5 }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new GrantRefused(401, 'cove_grant has expired: ask the API again');
      if (err instanceof joseErrors.JWKSTimeout || (err instanceof Error && (err as { code?: string }).code === 'ERR_JWKS_INVALID')) {
        throw new GrantRefused(503, 'the control plane keys cannot be fetched to verify grants; try again');
      }
      throw new GrantRefused(401, 'invalid cove_grant');
    }
    const claims = Claims.safeParse(payload);
    if (!claims.success) throw new GrantRefused(401, 'invalid cove_grant');
    return claims.data;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Reads at most `max` bytes of a body; more is an error (the stream is destroyed, not drained). */
export async function readCapped(body: AsyncIterable<Buffer> & { destroy?: (err?: Error) => unknown }, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of body) {
    size += c.length;
    if (size > max) {
      body.destroy?.();
      throw new ReplyTooLarge(max);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export class ReplyTooLarge extends Error {
  constructor(readonly max: number) {
    super(`reply larger than ${max} bytes`);
    this.name = 'ReplyTooLarge';
  }
}
