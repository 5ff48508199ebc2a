// Sandbox routes of the public API (E2B-compatible; both the v1 routes CLI 2.19 uses and SDK 2.51's v2 ones).

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { BadRequest } from '../errors.js';
import type { components } from '../gen/public-api.js';
import { MAX_FORK_COUNT } from '../sandboxes/fork.js';
import { DEFAULT_RESUME_TIMEOUT_S, type SandboxService } from '../sandboxes/sandbox-service.js';
import { teamOf } from './auth.js';
import { decodeMetadataFilter } from './metadata-filter.js';
import { parse } from './validation.js';
import { listedSandboxView, sandboxDetailView, sandboxView } from './views.js';

type S = components['schemas'];

const str = z.string().max(4096);
const stringMap = z.record(z.string().max(1024), z.string().max(64 * 1024)).refine((m) => Object.keys(m).length <= 1000, 'too many entries');

const NetworkSchema = z.object({
  allowPublicTraffic: z.boolean().optional(),
  allowOut: z.array(str).max(1000).optional(),
  denyOut: z.array(str).max(1000).optional(),
  egressProxy: z.object({ address: str, username: str.optional(), password: str.optional() }).nullable().optional(),
  maskRequestHost: str.optional(),
  httpsPorts: z.array(z.number().int().min(1).max(65535)).max(100).optional(),
  rules: z.record(z.array(z.object({ transform: z.object({ headers: z.record(z.string()).optional() }).optional() }))).optional(),
});

/** E2B's SandboxNetworkUpdateConfig (`PUT /sandboxes/{id}/network`): the egress fields; omitted ones clear. */
const NetworkUpdateSchema = NetworkSchema.pick({ allowOut: true, denyOut: true, egressProxy: true, rules: true }).extend({
  allow_internet_access: z.boolean().optional(),
});

const NewSandboxSchema = z.object({
  templateID: z.string().min(1).max(256),
  timeout: z.number().int().min(0).optional(),
  autoPause: z.boolean().optional(),
  autoPauseMemory: z.boolean().optional(),
  autoResume: z.object({ enabled: z.boolean() }).optional(),
  secure: z.boolean().optional(),
  allow_internet_access: z.boolean().optional(),
  network: NetworkSchema.optional(),
  metadata: stringMap.optional(),
  envVars: stringMap.optional(),
  mcp: z.record(z.unknown()).nullable().optional(),
  iam: z.record(z.unknown()).optional(),
  volumeMounts: z.array(z.object({ name: str, path: str })).optional(),
}) satisfies z.ZodType<S['NewSandbox']>;

/** Legacy ids `<id>-<clientID>` are accepted with the suffix stripped, as E2B does. */
const IdParams = z.object({ sandboxID: z.string().min(1).max(128).transform((id) => id.split('-')[0]!) });
const TimeoutBody = z.object({ timeout: z.number().int().min(0) }) satisfies z.ZodType<S['SandboxTimeoutRequest']>;
const RefreshBody = z.object({ duration: z.number().int().min(0).max(3600).optional() }).optional();
const ConnectBody = z.object({ timeout: z.number().int().min(0).optional(), memory: z.boolean().optional() }).optional();
/** E2B's fork body: `count` copies (1..MAX_FORK_COUNT), each running `timeout` seconds. */
const ForkBody = z
  .object({
    timeout: z.number().int().min(0).optional(),
    count: z.number().int().min(1, 'count must be at least 1').max(MAX_FORK_COUNT, `count must be at most ${MAX_FORK_COUNT}`).optional(),
  })
  .optional() satisfies z.ZodType<S['SandboxForkRequest'] | undefined>;
const PauseBody = z.object({ memory: z.boolean().optional() }).optional();
/** The deprecated `/resume` (E2B's ResumedSandbox; its autoPause is deprecated and ignored). */
const ResumeBody = z.object({ timeout: z.number().int().min(0).optional(), autoPause: z.boolean().optional(), memory: z.boolean().optional() }).optional();

const StateList = z
  .union([z.string(), z.array(z.string())])
  .transform((v) => (Array.isArray(v) ? v : [v]).flatMap((s) => s.split(',')).filter((s) => s !== ''))
  .pipe(z.array(z.enum(['running', 'paused'])));

const ListQuery = z.object({
  metadata: z.string().max(16 * 1024).optional(),
  state: StateList.optional(),
  template: z.string().max(256).optional(),
  startedAfter: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an RFC 3339 date-time').optional(),
  order: z.enum(['asc', 'desc']).default('desc'),
  limit: z.coerce.number().int().min(1).max(100).default(100),
  nextToken: z.string().max(512).optional(),
});
const V1ListQuery = z.object({ metadata: z.string().max(16 * 1024).optional() });

function encodeToken(c: { startedAt: number; id: string }): string {
  return Buffer.from(JSON.stringify([c.startedAt, c.id])).toString('base64url');
}

function decodeToken(t: string): { startedAt: number; id: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(t, 'base64url').toString('utf8'));
    if (Array.isArray(v) && typeof v[0] === 'number' && typeof v[1] === 'string') return { startedAt: v[0], id: v[1] };
  } catch {
    // fall through
  }
  throw new BadRequest('invalid nextToken');
}

export function sandboxRoutes(app: FastifyInstance, service: SandboxService): void {
  const create = async (body: unknown) => {
    const b = parse(NewSandboxSchema, body, 'body');
    return { ...b, allowInternetAccess: b.allow_internet_access };
  };

  for (const url of ['/sandboxes', '/v2/sandboxes']) {
    app.post(url, async (req, reply) => {
      const { sandbox, cluster } = await service.create(teamOf(req), await create(req.body));
      return reply.status(201).send(sandboxView(sandbox, cluster));
    });
  }

  app.put('/sandboxes/:sandboxID/network', async (req, reply) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    const b = parse(NetworkUpdateSchema, req.body ?? {}, 'body');
    await service.updateNetwork(teamOf(req), sandboxID, { ...b, allowInternetAccess: b.allow_internet_access });
    return reply.status(204).send();
  });

  app.get('/sandboxes', async (req) => {
    const q = parse(V1ListQuery, req.query, 'query');
    const { items } = await service.list(teamOf(req), { metadata: decodeMetadataFilter(q.metadata), order: 'desc', limit: 10_000 });
    return items.map(listedSandboxView) satisfies S['ListedSandbox'][];
  });

  app.get('/v2/sandboxes', async (req, reply) => {
    const q = parse(ListQuery, req.query, 'query');
    const states = q.state && q.state.length > 0 ? q.state : (['running', 'paused'] as const);
    const { items, next } = await service.list(teamOf(req), {
      states,
      metadata: decodeMetadataFilter(q.metadata),
      template: q.template,
      startedAfter: q.startedAfter ? Date.parse(q.startedAfter) : undefined,
      order: q.order,
      limit: q.limit,
      cursor: q.nextToken ? decodeToken(q.nextToken) : undefined,
    });
    if (next) void reply.header('X-Next-Token', encodeToken(next));
    return items.map(listedSandboxView) satisfies S['ListedSandbox'][];
  });

  app.get('/sandboxes/:sandboxID', async (req) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    const { sandbox, cluster } = await service.get(teamOf(req), sandboxID);
    return { ...sandboxDetailView(sandbox, cluster), volumeMounts: await service.volumeMountsOf(sandbox.id) };
  });

  app.delete('/sandboxes/:sandboxID', async (req, reply) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    await service.kill(teamOf(req), sandboxID);
    return reply.status(204).send();
  });

  app.post('/sandboxes/:sandboxID/timeout', async (req, reply) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    const { timeout } = parse(TimeoutBody, req.body, 'body');
    await service.setTimeout(teamOf(req), sandboxID, timeout);
    return reply.status(204).send();
  });

  app.post('/sandboxes/:sandboxID/refreshes', async (req, reply) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    const body = parse(RefreshBody, req.body, 'body');
    await service.refresh(teamOf(req), sandboxID, body?.duration);
    return reply.status(204).send();
  });

  // Running → end extended only, 200; paused → resumed, 201 (E2B).
  for (const url of ['/sandboxes/:sandboxID/connect', '/v2/sandboxes/:sandboxID/connect']) {
    app.post(url, async (req, reply) => {
      const { sandboxID } = parse(IdParams, req.params, 'path');
      const body = parse(ConnectBody, req.body, 'body');
      const { sandbox, cluster, resumed } = await service.connect(teamOf(req), sandboxID, { timeout: body?.timeout, memory: body?.memory });
      return reply.status(resumed ? 201 : 200).send(sandboxView(sandbox, cluster));
    });
  }

  app.post('/sandboxes/:sandboxID/resume', async (req, reply) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    const body = parse(ResumeBody, req.body, 'body');
    const { sandbox, cluster, resumed } = await service.connect(teamOf(req), sandboxID, {
      timeout: body?.timeout,
      memory: body?.memory,
      defaultTimeout: DEFAULT_RESUME_TIMEOUT_S,
    });
    return reply.status(resumed ? 201 : 200).send(sandboxView(sandbox, cluster));
  });

  // 204 once paused; 409 when already paused (the SDK's pause() then returns false).
  app.post('/sandboxes/:sandboxID/pause', async (req, reply) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    const body = parse(PauseBody, req.body, 'body');
    await service.pause(teamOf(req), sandboxID, body?.memory ?? true);
    return reply.status(204).send();
  });

  // 201 with one entry per requested copy, each a sandbox or an error (E2B's `[{sandbox?, error?}]`).
  app.post('/sandboxes/:sandboxID/fork', async (req, reply) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    const body = parse(ForkBody, req.body, 'body');
    const { cluster, outcomes } = await service.forks.fork(teamOf(req), sandboxID, { count: body?.count, timeout: body?.timeout });
    return reply.status(201).send(outcomes.map((o): S['SandboxForkResult'] => ('sandbox' in o ? { sandbox: sandboxView(o.sandbox, cluster) } : { error: o.error })));
  });
}
