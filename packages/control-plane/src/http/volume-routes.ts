// E2B's volume routes (`/volumes`, `/volumes/{volumeID}`); the domain is in volumes/volume-service.ts.

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { VolumeRecord } from '../store/volume-store.js';
import type { VolumeService } from '../volumes/volume-service.js';
import { teamOf } from './auth.js';
import { parse } from './validation.js';

/** The SDK's wire shapes (e2b 2.51 `Volume`, `VolumeAndToken`, `NewVolume`); gen/public-api.ts predates them. */
interface VolumeView {
  volumeID: string;
  name: string;
}
interface VolumeAndTokenView extends VolumeView {
  token: string;
  /** Where the content API is (`api.<domain>`); the SDK falls back to E2B_DOMAIN without it. */
  domain?: string;
}

export const MAX_VOLUME_NAME = 64;
/** A volume's name becomes a mount's label and may appear in paths: the template-name alphabet, nothing else. */
const VolumeName = z
  .string()
  .min(1, 'name must not be empty')
  .max(MAX_VOLUME_NAME, `name must be at most ${MAX_VOLUME_NAME} characters`)
  .regex(/^[a-z0-9][a-z0-9._-]*$/, 'name must be lowercase letters, digits, ".", "_" or "-", starting with a letter or digit');
const CreateBody = z.object({ name: VolumeName }).strict() ;
const IdParams = z.object({ volumeID: z.string().min(1).max(128) });

const view = (v: VolumeRecord): VolumeView => ({ volumeID: v.id, name: v.name });
async function viewWithToken(v: VolumeRecord, volumes: VolumeService): Promise<VolumeAndTokenView> {
  const domain = await volumes.domainOf(v);
  return { volumeID: v.id, name: v.name, token: v.token, ...(domain ? { domain } : {}) };
}

export function volumeRoutes(app: FastifyInstance, volumes: VolumeService): void {
  app.get('/volumes', async (req) => (await volumes.list(teamOf(req))).map(view));

  app.post('/volumes', async (req, reply) => {
    const body = parse(CreateBody, req.body, 'body');
    return reply.status(201).send(await viewWithToken(await volumes.create(teamOf(req), body.name), volumes));
  });

  app.get('/volumes/:volumeID', async (req) => {
    const { volumeID } = parse(IdParams, req.params, 'path');
    return viewWithToken(await volumes.get(teamOf(req), volumeID), volumes);
  });

  app.delete('/volumes/:volumeID', async (req, reply) => {
    const { volumeID } = parse(IdParams, req.params, 'path');
    await volumes.destroy(teamOf(req), volumeID);
    return reply.status(204).send();
  });
}

const QuotaBody = z.object({ quotaMb: z.number().int().min(16).max(1024 * 1024) }).strict();

/**
 * The operator's volume quota (admin token): `PATCH /admin/volumes/{volumeID}` `{ quotaMb }`. The quota is the
 * size of the volume's image, made on its first mount; an image already made keeps its size (docs/volumes.md).
 */
export function volumeAdminRoutes(app: FastifyInstance, volumes: VolumeService): void {
  app.patch('/admin/volumes/:volumeID', async (req) => {
    const { volumeID } = parse(IdParams, req.params, 'path');
    const { quotaMb } = parse(QuotaBody, req.body, 'body');
    const v = await volumes.setQuota(volumeID, quotaMb * 1024 * 1024);
    return { volumeID: v.id, name: v.name, teamID: v.teamId, quotaMb: v.quotaBytes / (1024 * 1024) };
  });
}

const AccessBody = z.object({ token: z.string().min(1).max(256) }).strict();

/**
 * The edge's check before serving `/volumecontent/{volumeID}/…` (cluster token): `POST
 * /cluster/v1/volumes/{volumeID}/content-access` `{ token }` → `{ volumeID, quotaBytes }`; 404
 * volume_not_found for a wrong token or another cluster's volume, 409 volume_in_use while a sandbox holds it.
 */
export function volumeClusterRoutes(app: FastifyInstance, volumes: VolumeService): void {
  app.post('/cluster/v1/volumes/:volumeID/content-access', async (req) => {
    const { volumeID } = parse(IdParams, req.params, 'path');
    const { token } = parse(AccessBody, req.body, 'body');
    const v = await volumes.contentAccess(req.cluster!.id, volumeID, token);
    return { volumeID: v.id, quotaBytes: v.quotaBytes };
  });

  /** The cluster's destroyed volume ids, for the edge's sweep of their images. */
  app.get('/cluster/v1/volumes/destroyed', async (req) => ({ volumeIDs: await volumes.destroyedIds(req.cluster!.id) }));
}
