// Persistent snapshot routes (E2B's createSnapshot / listSnapshots; deletion is `DELETE /templates/{id}`, in
// template-routes.ts). The domain is in snapshots/snapshot-service.ts.

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { BadRequest } from '../errors.js';
import type { components } from '../gen/public-api.js';
import type { SnapshotService } from '../snapshots/snapshot-service.js';
import { MAX_NAME, NAME_RULE } from '../templates/names.js';
import { teamOf } from './auth.js';
import { parse } from './validation.js';

type S = components['schemas'];

const IdParams = z.object({ sandboxID: z.string().min(1).max(128).transform((id) => id.split('-')[0]!) });
/** Snapshot names follow template names: `Sandbox.create(name)` resolves them alike. */
const SnapshotName = z
  .string()
  .min(1, 'name must not be empty')
  .max(MAX_NAME, `name must be at most ${MAX_NAME} characters`)
  .regex(/^[a-z0-9][a-z0-9._-]*$/, `name must be ${NAME_RULE}`);
const CreateBody = z.object({ name: SnapshotName.optional() }).optional() satisfies z.ZodType<S['SandboxSnapshotRequest'] | undefined>;
const ListQuery = z.object({
  sandboxID: z.string().min(1).max(128).optional(),
  name: z.string().min(1).max(300).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(100),
  nextToken: z.string().max(512).optional(),
});

function encodeCursor(c: { createdAt: number; id: string }): string {
  return Buffer.from(JSON.stringify([c.createdAt, c.id])).toString('base64url');
}

function decodeCursor(t: string): { createdAt: number; id: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(t, 'base64url').toString('utf8'));
    if (Array.isArray(v) && typeof v[0] === 'number' && typeof v[1] === 'string') return { createdAt: v[0], id: v[1] };
  } catch {
    // fall through
  }
  throw new BadRequest('invalid nextToken');
}

export function snapshotRoutes(app: FastifyInstance, snapshots: SnapshotService): void {
  app.post('/sandboxes/:sandboxID/snapshots', async (req, reply) => {
    const { sandboxID } = parse(IdParams, req.params, 'path');
    const body = parse(CreateBody, req.body, 'body');
    const view = await snapshots.create(teamOf(req), sandboxID, body?.name);
    return reply.status(201).send(view satisfies S['SnapshotInfo']);
  });

  app.get('/snapshots', async (req, reply) => {
    const q = parse(ListQuery, req.query, 'query');
    const { items, last, more } = await snapshots.list(teamOf(req), {
      sandboxId: q.sandboxID?.split('-')[0],
      name: q.name,
      limit: q.limit,
      cursor: q.nextToken ? decodeCursor(q.nextToken) : undefined,
    });
    if (more && last) void reply.header('X-Next-Token', encodeCursor(last));
    return items satisfies S['SnapshotInfo'][];
  });
}
