// The cluster API the edges call (docs/pause-resume.md, "Edge: auto-resume"), authenticated with the cluster
// token (`authorization: Bearer <token>`): the cluster is the one whose stored token matches, compared in constant
// time. Missing token → 401, a token of no cluster → 403, as the edge's own REST API answers.

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { bearerToken, tokensEqual } from '@cove/auth-tokens';
import { ClusterMetricsReport } from '@cove/contracts/telemetry';
import { z } from 'zod';
import type { ClusterMetricsStore } from '../observability/cluster-health.js';
import { Forbidden, Unauthenticated } from '../errors.js';
import type { SandboxService } from '../sandboxes/sandbox-service.js';
import type { Cluster, ClusterStore } from '../store/cluster-store.js';
import { parse } from './validation.js';

declare module 'fastify' {
  interface FastifyRequest {
    cluster?: Cluster;
  }
}

const Params = z.object({ sandboxID: z.string().min(1).max(128).regex(/^[a-z0-9]+$/, 'sandboxID must be lowercase letters and digits') });
const ResumeBody = z.object({
  port: z.number().int().min(1).max(65535),
  // An empty header value is no token (it matches no sandbox's token).
  trafficAccessToken: z.string().max(512).optional(),
  // envd's own access token (X-Access-Token), what wakes a sandbox through envd's port.
  envdAccessToken: z.string().max(512).optional(),
});

export function clusterAuth(clusters: ClusterStore) {
  return async (req: FastifyRequest): Promise<void> => {
    const token = bearerToken(req.headers.authorization);
    if (!token) throw new Unauthenticated('missing cluster token: send authorization: Bearer <cluster token>');
    // Every cluster is compared (no early exit), so the time taken does not say which one matched.
    let match: Cluster | undefined;
    for (const c of await clusters.list()) if (tokensEqual(token, c.token) && !match) match = c;
    if (!match) throw new Forbidden('invalid cluster token');
    req.cluster = match;
  };
}

export function clusterRoutes(app: FastifyInstance, service: SandboxService, metrics: ClusterMetricsStore): void {
  /** Who the calling cluster is: the edge checks that a grant's audience is its own cluster. */
  app.get('/cluster/v1/identity', async (req) => ({ clusterId: req.cluster!.id }));

  /**
   * The anonymized metrics report (docs/observability.md, "Anonymized metrics out"). Parsed with the strict
   * published schema: a property it does not name, or a value of the wrong type, is refused whole (400), so
   * nothing else can ride along into the store.
   */
  app.post('/cluster/v1/metrics', async (req, reply) => {
    const report = parse(ClusterMetricsReport, req.body, 'metrics report');
    await metrics.add(req.cluster!.id, report);
    return reply.status(204).send();
  });

  app.post('/cluster/v1/sandboxes/:sandboxID/resume', async (req) => {
    const { sandboxID } = parse(Params, req.params, 'path');
    const body = parse(ResumeBody, req.body, 'body');
    return service.autoResume(req.cluster!, sandboxID, body);
  });
}
