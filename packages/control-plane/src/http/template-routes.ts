// Template routes (E2B's v2/v3 build flow, e2b-sdk.md §2.2): registering builds, COPY upload links, starting
// builds, status relay, listing, details, publishing, deletion, names and tags. Handlers parse with zod and
// answer the generated OpenAPI types; the domain lives in templates/template-service.ts.

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { BadRequest } from '../errors.js';
import type { components } from '../gen/public-api.js';
import type { Build } from '../store/template-store.js';
import type { SnapshotService } from '../snapshots/snapshot-service.js';
import { parseBuildStart } from '../templates/build-spec.js';
import { MAX_BUILD_CPU, type TemplateService } from '../templates/template-service.js';
import { NameRefSchema, TagListSchema } from '../templates/names.js';
import { teamOf } from './auth.js';
import { parse } from './validation.js';
import { templateBuildView, templateView } from './views.js';

type S = components['schemas'];

const ListQuery = z.object({ teamID: z.string().max(128).optional() });
const V2ListQuery = ListQuery.extend({
  limit: z.coerce.number().int().min(1).max(100).default(100),
  nextToken: z.string().max(512).optional(),
});
const AliasParams = z.object({ alias: z.string().min(1).max(256) });
const TemplateParams = z.object({ templateID: z.string().min(1).max(256) });
const BuildParams = TemplateParams.extend({ buildID: z.string().min(1).max(128) });
const FileParams = TemplateParams.extend({ hash: z.string().regex(/^[0-9a-f]{64}$/, 'hash must be 64 lowercase hex digits (sha256)') });

const BuildRequestBody = z
  .object({
    name: NameRefSchema.optional(),
    alias: NameRefSchema.optional(),
    tags: TagListSchema.optional(),
    teamID: z.string().max(128).optional(),
    cpuCount: z.number().int().min(1).max(MAX_BUILD_CPU).optional(),
    memoryMB: z.number().int().min(128).max(1024 * 1024).optional(),
    minFreeDiskMb: z.number().int().min(0).max(1024 * 1024).optional(),
  })
  .refine((b) => b.name !== undefined || b.alias !== undefined, { message: 'name is required', path: ['name'] });

const DetailQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(100),
  nextToken: z.string().max(512).optional(),
});
const UpdateBody = z.object({ public: z.boolean().optional() }).default({}) satisfies z.ZodType<S['TemplateUpdateRequest'], z.ZodTypeDef, unknown>;
const AssignTagsBody = z.object({ target: NameRefSchema, tags: TagListSchema.min(1, 'tags must not be empty') });
const DeleteTagsBody = z.object({ name: z.string().min(1).max(300), tags: TagListSchema.min(1, 'tags must not be empty') });

function encodeCursor(b: Build): string {
  return Buffer.from(JSON.stringify([b.createdAt, b.buildId])).toString('base64url');
}

function decodeCursor(t: string): { createdAt: number; buildId: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(t, 'base64url').toString('utf8'));
    if (Array.isArray(v) && typeof v[0] === 'number' && typeof v[1] === 'string') return { createdAt: v[0], buildId: v[1] };
  } catch {
    // fall through
  }
  throw new BadRequest('invalid nextToken');
}

export function templateRoutes(app: FastifyInstance, templates: TemplateService, snapshots: SnapshotService): void {
  const list = async (req: Parameters<typeof teamOf>[0]) => (await templates.list(teamOf(req))).map(({ template, buildCount }) => templateView(template, buildCount));

  app.get('/templates', async (req) => {
    parse(ListQuery, req.query, 'query');
    return list(req) satisfies Promise<S['Template'][]>;
  });

  app.get('/v2/templates', async (req, reply) => {
    const q = parse(V2ListQuery, req.query, 'query');
    const all = await list(req);
    const start = q.nextToken ? Number.parseInt(Buffer.from(q.nextToken, 'base64url').toString('utf8'), 10) || 0 : 0;
    const page = all.slice(start, start + q.limit);
    if (start + q.limit < all.length) void reply.header('X-Next-Token', Buffer.from(String(start + q.limit)).toString('base64url'));
    return page;
  });

  app.get('/templates/aliases/:alias', async (req) => {
    const { alias } = parse(AliasParams, req.params, 'path');
    return templates.alias(teamOf(req), alias) satisfies Promise<S['TemplateAliasResponse']>;
  });

  app.post('/v3/templates', async (req, reply) => {
    const b = parse(BuildRequestBody, req.body, 'body');
    const res = await templates.requestBuild(teamOf(req), {
      name: (b.name ?? b.alias)!,
      tags: b.tags ?? [],
      cpuCount: b.cpuCount,
      memoryMB: b.memoryMB,
      minFreeDiskMb: b.minFreeDiskMb,
    });
    return reply.status(202).send(res satisfies S['TemplateRequestResponseV3']);
  });

  app.get('/templates/:templateID/files/:hash', async (req, reply) => {
    const { templateID, hash } = parse(FileParams, req.params, 'path');
    const up = await templates.fileUpload(teamOf(req), templateID, hash);
    return reply.status(201).send(up satisfies S['TemplateBuildFileUpload']);
  });

  app.post('/v2/templates/:templateID/builds/:buildID', async (req, reply) => {
    const { templateID, buildID } = parse(BuildParams, req.params, 'path');
    const spec = parseBuildStart(req.body);
    await templates.startBuild(teamOf(req), templateID, buildID, spec);
    return reply.status(202).send();
  });

  app.get('/templates/:templateID', async (req, reply) => {
    const { templateID } = parse(TemplateParams, req.params, 'path');
    const q = parse(DetailQuery, req.query, 'query');
    const { template, builds, more } = await templates.get(teamOf(req), templateID, q.limit, q.nextToken ? decodeCursor(q.nextToken) : undefined);
    const last = builds[builds.length - 1];
    if (more && last) void reply.header('X-Next-Token', encodeCursor(last));
    const names = template.alias ? [template.alias] : [];
    return {
      templateID: template.templateId,
      public: template.public || template.teamId === null,
      aliases: names,
      names,
      createdAt: template.createdAt.toISOString(),
      updatedAt: template.updatedAt.toISOString(),
      lastSpawnedAt: template.lastSpawnedAt ? template.lastSpawnedAt.toISOString() : null,
      spawnCount: template.spawnCount,
      builds: builds.map(templateBuildView),
    } satisfies S['TemplateWithBuilds'];
  });

  app.delete('/templates/:templateID', async (req, reply) => {
    const { templateID } = parse(TemplateParams, req.params, 'path');
    // A persistent snapshot is a template of its team as far as E2B's API goes (SDK deleteSnapshot).
    if (!(await snapshots.deleteIfSnapshot(teamOf(req), templateID))) await templates.delete(teamOf(req), templateID);
    return reply.status(204).send();
  });

  for (const url of ['/templates/:templateID', '/v2/templates/:templateID']) {
    app.patch(url, async (req) => {
      const { templateID } = parse(TemplateParams, req.params, 'path');
      const b = parse(UpdateBody, req.body, 'body');
      return templates.setPublic(teamOf(req), templateID, b.public) satisfies Promise<S['TemplateUpdateResponse']>;
    });
  }

  app.post('/templates/tags', async (req, reply) => {
    const b = parse(AssignTagsBody, req.body, 'body');
    const res = await templates.assignTags(teamOf(req), b.target, [...new Set(b.tags)]);
    return reply.status(201).send(res satisfies S['AssignedTemplateTags']);
  });

  app.delete('/templates/tags', async (req, reply) => {
    const b = parse(DeleteTagsBody, req.body, 'body');
    await templates.removeTags(teamOf(req), b.name, [...new Set(b.tags)]);
    return reply.status(204).send();
  });

  app.get('/templates/:templateID/tags', async (req) => {
    const { templateID } = parse(TemplateParams, req.params, 'path');
    const tags = await templates.listTags(teamOf(req), templateID);
    return tags.map((t) => ({ tag: t.tag, buildID: t.buildId, createdAt: new Date(t.createdAt).toISOString() })) satisfies S['TemplateTag'][];
  });
}
