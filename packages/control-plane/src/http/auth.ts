// Public-API authentication: `X-API-Key: <key>` (the SDK) or `Authorization: Bearer <key>`. The key is looked
// up by its sha256, so the clear key is never compared or stored. Admin routes use `X-Admin-Token`, compared in
// constant time against the token's sha256 (the configuration keeps only the hash).

import type { FastifyRequest } from 'fastify';
import { tokenMatchesHash } from '@cove/auth-tokens';
import { ACCESS_TOKEN_PREFIX } from '../auth/api-key.js';
import { Unauthenticated } from '../errors.js';
import type { Team, TeamStore } from '../store/team-store.js';

declare module 'fastify' {
  interface FastifyRequest {
    team?: Team;
    /** The API key the caller authenticated with (account routes only). */
    apiKey?: string;
  }
}

function presentedKey(req: FastifyRequest): string | undefined {
  const header = req.headers['x-api-key'];
  if (typeof header === 'string' && header.length > 0) return header;
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  return undefined;
}

export function apiKeyAuth(teams: TeamStore) {
  return async (req: FastifyRequest): Promise<void> => {
    const key = presentedKey(req);
    if (!key) throw new Unauthenticated('missing API key: send it in the X-API-Key header');
    // Keys are short; anything long is not one of ours and need not reach the store.
    const team = key.length <= 256 ? await teams.teamByApiKey(key) : undefined;
    if (!team) throw new Unauthenticated('Invalid API key');
    req.team = team;
  };
}

/**
 * E2B's account routes (`/teams`, `/api-keys`, `/access-tokens`): an access token (`Authorization: Bearer
 * sk_e2b_…`, as the CLI sends after `e2b auth login`) or an API key. Cove has no user accounts: both speak for
 * their team. `req.apiKey` keeps the API key a caller authenticated with (GET /teams answers it back).
 */
export function accountAuth(teams: TeamStore) {
  return async (req: FastifyRequest): Promise<void> => {
    const secret = presentedKey(req);
    if (!secret) throw new Unauthenticated('missing credentials: send an access token (authorization: Bearer) or an API key (X-API-Key)');
    if (secret.length > 256) throw new Unauthenticated('Invalid access token or API key');
    if (secret.startsWith(ACCESS_TOKEN_PREFIX)) {
      const team = await teams.teamByAccessToken(secret);
      if (!team) throw new Unauthenticated('Invalid access token');
      req.team = team;
      return;
    }
    const team = await teams.teamByApiKey(secret);
    if (!team) throw new Unauthenticated('Invalid API key');
    req.team = team;
    req.apiKey = secret;
  };
}

export function adminAuth(adminTokenHash: string) {
  return async (req: FastifyRequest): Promise<void> => {
    const t = req.headers['x-admin-token'];
    if (typeof t !== 'string' || !tokenMatchesHash(t, adminTokenHash)) throw new Unauthenticated('missing or invalid X-Admin-Token');
  };
}

export function teamOf(req: FastifyRequest): Team {
  if (!req.team) throw new Unauthenticated();
  return req.team;
}
