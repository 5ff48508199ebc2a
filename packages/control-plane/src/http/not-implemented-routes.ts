// Every other E2B route answers 501 with what is missing, so SDK users get a clear error instead of a 404 that
// the SDK would read as "not found". Each entry names the feature; later work replaces entries with handlers.

import type { FastifyInstance, HTTPMethods } from 'fastify';
import { NotImplemented } from '../errors.js';

const ROUTES: Array<[HTTPMethods, string, string]> = [
  ['POST', '/v2/templates', 'the deprecated v2 template registration (the SDK uses POST /v3/templates)'],
  ['POST', '/templates', 'v1 (Dockerfile push) template builds; use the SDK or `e2b template create`'],
  ['POST', '/templates/:templateID', 'v1 (Dockerfile push) template builds; use the SDK or `e2b template create`'],
  ['POST', '/templates/:templateID/builds/:buildID', 'v1 (Dockerfile push) template builds; use the SDK or `e2b template create`'],
  ['GET', '/nodes', 'node listing'],
  ['GET', '/nodes/:nodeID', 'node details'],
  ['POST', '/nodes/:nodeID', 'node status changes'],
];

export const NOT_IMPLEMENTED_ROUTES: ReadonlyArray<readonly [HTTPMethods, string, string]> = ROUTES;

export function notImplementedRoutes(app: FastifyInstance): void {
  for (const [method, url, what] of ROUTES) {
    app.route({
      method,
      url,
      handler: async () => {
        throw new NotImplemented(what);
      },
    });
  }
}
