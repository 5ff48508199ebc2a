// Public-API authentication: `X-API-Key: <key>` (the SDK) or `Authorization: Bearer <key>`. The key is looked
// up by its sha256, so the clear key is never compared or stored. Admin routes use `X-Admin-Token`, compared in
// constant time against the token's sha256 (the configuration keeps only the hash).

import type { FastifyRequest } from 'fastify';
import { tokenMatchesHash } from '@cove/auth-tokens';
import { Unauthenticated } from '../errors.js';
import type { Team, TeamStore } from '../store/team-store.js';

declare module 'fastify' {
  interface FastifyRequest {
    team?: Team;
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
