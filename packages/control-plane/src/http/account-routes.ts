// E2B's account routes (spec/openapi.yml of e2b-dev/infra: `GET /teams`, `/api-keys`, `/access-tokens`), as the
// unchanged CLI and a dashboard call them. Cove has no user accounts, so the team is the account: the caller's
// access token or API key names it (accountAuth). A new key or token is returned exactly once, at creation;
// Cove stores only hashes, so `GET /teams` can answer the API key only to a caller who authenticated with it.

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { maskingDetails } from '../auth/api-key.js';
import type { ApiKeyInfo, TeamStore } from '../store/team-store.js';
import { teamOf } from './auth.js';
import { parse } from './validation.js';

const Name = z.object({ name: z.string().trim().min(1).max(128) }).strict();
const Id = z.object({ id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be an id this API returned') });

/** TeamAPIKey (no `createdBy`: there are no users; null as E2B answers for keys made by the system). */
function keyView(k: ApiKeyInfo) {
  return { id: k.id, name: k.name, mask: maskingDetails(k.mask), createdAt: k.createdAt.toISOString(), createdBy: null, lastUsed: k.lastUsedAt?.toISOString() ?? null };
}

export function accountRoutes(app: FastifyInstance, teams: TeamStore): void {
  app.get('/teams', async (req) => {
    const team = teamOf(req);
    return [{ teamID: team.id, name: team.name, apiKey: req.apiKey ?? '', isDefault: true }];
  });

  app.get('/api-keys', async (req) => (await teams.listApiKeys(teamOf(req).id)).map(keyView));

  app.post('/api-keys', async (req, reply) => {
    const { name } = parse(Name, req.body, 'body');
    const k = await teams.createApiKey(teamOf(req).id, name);
    return reply.status(201).send({ ...keyView(k), key: k.key });
  });

  app.patch('/api-keys/:apiKeyID', async (req, reply) => {
    const { id } = parse(Id, { id: (req.params as { apiKeyID: string }).apiKeyID }, 'path');
    const { name } = parse(Name, req.body, 'body');
    await teams.renameApiKey(teamOf(req).id, id, name);
    return reply.status(200).send();
  });

  app.delete('/api-keys/:apiKeyID', async (req, reply) => {
    const { id } = parse(Id, { id: (req.params as { apiKeyID: string }).apiKeyID }, 'path');
    await teams.deleteApiKey(teamOf(req).id, id);
    return reply.status(204).send();
  });

  app.post('/access-tokens', async (req, reply) => {
    const { name } = parse(Name, req.body, 'body');
    const t = await teams.createAccessToken(teamOf(req).id, name);
    return reply.status(201).send({ id: t.id, name: t.name, token: t.token, mask: maskingDetails(t.mask), createdAt: t.createdAt.toISOString() });
  });

  app.delete('/access-tokens/:accessTokenID', async (req, reply) => {
    const { id } = parse(Id, { id: (req.params as { accessTokenID: string }).accessTokenID }, 'path');
    await teams.deleteAccessToken(teamOf(req).id, id);
    return reply.status(204).send();
  });
}
