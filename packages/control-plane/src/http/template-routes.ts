// Template catalogue routes: the templates of the team's cluster (for now the `base` each cluster registers).

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { NotFound } from '../errors.js';
import type { components } from '../gen/public-api.js';
import type { ClusterStore } from '../store/cluster-store.js';
import { teamOf } from './auth.js';
import { parse } from './validation.js';
import { templateView } from './views.js';

const ListQuery = z.object({ teamID: z.string().max(128).optional() });
const V2ListQuery = ListQuery.extend({
  limit: z.coerce.number().int().min(1).max(100).default(100),
  nextToken: z.string().max(512).optional(),
});
const AliasParams = z.object({ alias: z.string().min(1).max(256) });

export function templateRoutes(app: FastifyInstance, clusters: ClusterStore): void {
  const list = async (clusterId: string | null) => (clusterId ? (await clusters.listTemplates(clusterId)).map(templateView) : []);

  app.get('/templates', async (req) => {
    parse(ListQuery, req.query, 'query');
    return list(teamOf(req).clusterId) satisfies Promise<components['schemas']['Template'][]>;
  });

  app.get('/v2/templates', async (req, reply) => {
    const q = parse(V2ListQuery, req.query, 'query');
    const all = await list(teamOf(req).clusterId);
    const start = q.nextToken ? Number.parseInt(Buffer.from(q.nextToken, 'base64url').toString('utf8'), 10) || 0 : 0;
    const page = all.slice(start, start + q.limit);
    if (start + q.limit < all.length) void reply.header('X-Next-Token', Buffer.from(String(start + q.limit)).toString('base64url'));
    return page;
  });

  app.get('/templates/aliases/:alias', async (req) => {
    const { alias } = parse(AliasParams, req.params, 'path');
    const clusterId = teamOf(req).clusterId;
    const t = clusterId ? await clusters.findTemplate(clusterId, alias) : undefined;
    if (!t) throw new NotFound(`template alias '${alias}' not found`);
    return { templateID: t.templateId, public: t.public } satisfies components['schemas']['TemplateAliasResponse'];
  });
}
