// Grants for the cluster's public port (docs/observability.md, "The public routes: a redirect with a grant"):
// short-lived EdDSA JWTs the control plane signs after it has authenticated the API key and checked that the
// sandbox or build is the team's. The edge verifies them against the public JWKS, so the control plane never
// sees the logs or metrics the grant unlocks. The key pair is generated once and kept in the store, so every
// control-plane replica on the same database signs with the same key and a restart changes nothing.

import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK, type CryptoKey } from 'jose';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';

export const GRANT_ALG = 'EdDSA';
/** The longest a grant lives: it only has to survive one redirect. */
export const MAX_GRANT_TTL_S = 60;
export const JWKS_PATH = '/.well-known/cove-grant-jwks.json';

/** What a grant lets its bearer read. One name per concept: the edge checks the same strings. */
export type GrantScope = 'sandbox.logs' | 'sandbox.metrics' | 'build.logs' | 'build.status';

export type GrantSubject =
  | { scope: 'sandbox.logs' | 'sandbox.metrics'; sandboxIds: string[] }
  | { scope: 'build.logs' | 'build.status'; templateId: string; buildId: string; state?: RecordedBuildState; nodeId?: string };

/**
 * The build's state as the control plane records it, for the edge to answer with when no node knows the build
 * (not started yet, or its node is gone). The reason carries the step and exit code only, never step output.
 */
export interface RecordedBuildState {
  status: 'waiting' | 'building' | 'ready' | 'error';
  reason?: { message: string; step?: string };
}

export interface GrantClaims {
  iss: string;
  aud: string;
  sub: string;
  scope: GrantScope;
  sandbox_ids?: string[];
  template_id?: string;
  build_id?: string;
  build_state?: RecordedBuildState;
  node_id?: string;
  iat: number;
  exp: number;
}

export class GrantSigner {
  private constructor(
    private readonly key: CryptoKey,
    private readonly publicJwk: JWK,
    private readonly issuer: string,
    private readonly ttlS: number,
  ) {}

  /** Loads the stored key pair, creating it on first use (one row; a concurrent creator's row wins). */
  static async open(db: Kysely<Database>, issuer: string, ttlS: number): Promise<GrantSigner> {
    let row = await db.selectFrom('grant_keys').selectAll().where('id', '=', 'current').executeTakeFirst();
    if (!row) {
      const { privateKey, publicKey } = await generateKeyPair(GRANT_ALG, { crv: 'Ed25519', extractable: true });
      const kid = randomUUID();
      const priv = { ...(await exportJWK(privateKey)), kid, alg: GRANT_ALG };
      const pub = { ...(await exportJWK(publicKey)), kid, alg: GRANT_ALG, use: 'sig' };
      await db
        .insertInto('grant_keys')
        .values({ id: 'current', private_jwk: JSON.stringify(priv), public_jwk: JSON.stringify(pub), created_at: Date.now() })
        .onConflict((oc) => oc.column('id').doNothing())
        .execute();
      row = await db.selectFrom('grant_keys').selectAll().where('id', '=', 'current').executeTakeFirstOrThrow();
    }
    const priv = JSON.parse(row.private_jwk) as JWK;
    const key = (await importJWK(priv, GRANT_ALG)) as CryptoKey;
    return new GrantSigner(key, JSON.parse(row.public_jwk) as JWK, issuer, Math.min(ttlS, MAX_GRANT_TTL_S));
  }

  /** The public keys, as `GET /.well-known/cove-grant-jwks.json` serves them (never the private part). */
  jwks(): { keys: JWK[] } {
    const { kty, crv, x, kid, alg, use } = this.publicJwk;
    return { keys: [{ kty, crv, x, kid, alg, use }] };
  }

  async sign(clusterId: string, teamId: string, subject: GrantSubject, now = Date.now()): Promise<string> {
    const claims: Record<string, unknown> = { scope: subject.scope };
    if ('sandboxIds' in subject) claims.sandbox_ids = subject.sandboxIds;
    else {
      claims.template_id = subject.templateId;
      claims.build_id = subject.buildId;
      if (subject.state) claims.build_state = subject.state;
      // The builder node: asked first, as another node only knows what reached cluster storage so far.
      if (subject.nodeId) claims.node_id = subject.nodeId;
    }
    const iat = Math.floor(now / 1000);
    return new SignJWT(claims)
      .setProtectedHeader({ alg: GRANT_ALG, kid: this.publicJwk.kid, typ: 'cove-grant+jwt' })
      .setIssuer(this.issuer)
      .setAudience(clusterId)
      .setSubject(teamId)
      .setIssuedAt(iat)
      .setExpirationTime(iat + this.ttlS)
      .sign(this.key);
  }
}
