// From a sandbox request to the node that runs the sandbox: route (Host or E2b-Sandbox-* headers), catalog
// lookup, node lookup, traffic-token check. Shared by plain requests and WebSocket upgrades; the answer is
// either a target or the exact error to send.

import type { IncomingHttpHeaders } from 'node:http';
import {
  ENVD_PORT,
  TRAFFIC_TOKEN_HEADER,
  proxyErrorBody,
  resolveSandboxRoute,
  sandboxNotFoundBody,
  type ProxyErrorBody,
} from '@cove/traffic-proxy';
import type { Logger } from 'pino';
import type { NodeDirectory } from '../nodes/node-directory.js';
import type { EdgeStore } from '../store/edge-store.js';
import { tokenMatchesHash } from '@cove/auth-tokens';

/** Where a request goes, or why it goes nowhere. */
export type RouteDecision =
  | { ok: true; sandboxId: string; port: number; nodeId: string; proxyUrl: string }
  | { ok: false; status: number; body: ProxyErrorBody };

/** Dependencies of {@link routeSandboxRequest}. */
export interface SandboxRouterDeps {
  sandboxDomain: string;
  store: EdgeStore;
  directory: NodeDirectory;
  log: Logger;
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Decide where a sandbox request goes. */
export async function routeSandboxRequest(headers: IncomingHttpHeaders, deps: SandboxRouterDeps): Promise<RouteDecision> {
  const route = resolveSandboxRoute(headers, deps.sandboxDomain);
  if (!route.ok) return { ok: false, status: 400, body: proxyErrorBody(400, route.message) };
  const { sandboxId, port } = route;
  let entry;
  let node;
  try {
    entry = await deps.store.getSandbox(sandboxId);
    node = entry && (await deps.directory.get(entry.nodeId));
  } catch (err) {
    deps.log.error({ err, sandboxId }, 'sandbox catalog lookup failed');
    return { ok: false, status: 503, body: proxyErrorBody(503, 'The sandbox catalog is unavailable', { sandboxId }) };
  }
  if (!entry || !node) return { ok: false, status: 502, body: sandboxNotFoundBody(sandboxId) };
  if (port !== ENVD_PORT && entry.recovered && !entry.trafficTokenHash) {
    return {
      ok: false,
      status: 403,
      body: proxyErrorBody(403, 'Traffic access for this sandbox is not known to the edge yet; only the envd port is reachable', { sandboxId }),
    };
  }
  if (port !== ENVD_PORT && entry.trafficTokenHash) {
    const given = one(headers[TRAFFIC_TOKEN_HEADER]);
    if (!given || !tokenMatchesHash(given, entry.trafficTokenHash)) {
      return {
        ok: false,
        status: 403,
        body: proxyErrorBody(403, `Missing or invalid ${TRAFFIC_TOKEN_HEADER} header for this private sandbox`, { sandboxId }),
      };
    }
  }
  return { ok: true, sandboxId, port, nodeId: node.nodeId, proxyUrl: node.proxyUrl };
}
