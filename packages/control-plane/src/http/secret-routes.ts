// E2B's secret routes (`/secrets`, `/secrets/{secretID}`; e2b 2.51's `Secret`, `NewSecret`, `SecretUpdate`). The
// domain is in secrets/secret-service.ts. A value is checked here and handed on; no answer or error carries it.

import type { FastifyInstance } from 'fastify';
import { secretNameProblem, secretValueProblem } from '@cove/egress';
import { z } from 'zod';
import type { SecretService } from '../secrets/secret-service.js';
import type { SecretRecord } from '../store/secret-store.js';
import { teamOf } from './auth.js';
import { parse } from './validation.js';

/** The SDK's `Secret` (metadata only). */
interface SecretView {
  secretID: string;
  name: string;
  currentVersion: number;
  metadata: Record<string, string>;
  createdAt: string;
  updatedAt: string;
}

const view = (s: SecretRecord): SecretView => ({
  secretID: s.id,
  name: s.name,
  currentVersion: s.currentVersion,
  metadata: s.metadata,
  createdAt: new Date(s.createdAt).toISOString(),
  updatedAt: new Date(s.updatedAt).toISOString(),
});

// The problem text never quotes the value (zod's own messages for these checks do not either).
const SecretName = z.string().superRefine((n, ctx) => {
  const p = secretNameProblem(n);
  if (p) ctx.addIssue({ code: z.ZodIssueCode.custom, message: p });
});
const SecretValue = z.string().superRefine((v, ctx) => {
  const p = secretValueProblem(v);
  if (p) ctx.addIssue({ code: z.ZodIssueCode.custom, message: p });
});
/** E2B's bounds: at most 32 entries, keys 128 bytes, values 1024 bytes, 8192 bytes in all. */
const Metadata = z
  .record(z.string().min(1).max(128), z.string().max(1024))
  .refine((m) => Object.keys(m).length <= 32, 'metadata: at most 32 entries')
  .refine((m) => Object.entries(m).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0) <= 8192, 'metadata: at most 8192 bytes in total');

const CreateBody = z.object({ name: SecretName, value: SecretValue, metadata: Metadata.optional() }).strict();
const UpdateBody = z.object({ value: SecretValue, metadata: Metadata.optional() }).strict();
const IdParams = z.object({ secretID: z.string().min(1).max(256) });
const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(100),
  nextToken: z.string().regex(/^sec_[a-z0-9]{24}$/, 'invalid nextToken').optional(),
});

export function secretRoutes(app: FastifyInstance, secrets: SecretService): void {
  app.get('/secrets', async (req, reply) => {
    const q = parse(ListQuery, req.query, 'query');
    const page = await secrets.list(teamOf(req), q.limit, q.nextToken);
    if (page.length === q.limit) void reply.header('X-Next-Token', page[page.length - 1]!.id);
    return page.map(view);
  });

  app.post('/secrets', async (req, reply) => {
    const body = parse(CreateBody, req.body, 'body');
    return reply.status(201).send(view(await secrets.create(teamOf(req), body.name, body.value, body.metadata ?? {})));
  });

  app.get('/secrets/:secretID', async (req) => {
    const { secretID } = parse(IdParams, req.params, 'path');
    return view(await secrets.get(teamOf(req), secretID));
  });

  app.post('/secrets/:secretID', async (req) => {
    const { secretID } = parse(IdParams, req.params, 'path');
    const body = parse(UpdateBody, req.body, 'body');
    return view(await secrets.update(teamOf(req), secretID, body.value, body.metadata));
  });

  app.delete('/secrets/:secretID', async (req, reply) => {
    const { secretID } = parse(IdParams, req.params, 'path');
    await secrets.destroy(teamOf(req), secretID);
    return reply.status(204).send();
  });
}
