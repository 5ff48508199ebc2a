// From a sandbox request to the node that runs the sandbox: route (Host or E2b-Sandbox-* headers), catalog
// lookup, node lookup (waking a paused sandbox through the control plane when there is no route),
// traffic-token check. Shared by plain requests and WebSocket upgrades; the answer is either a target or the
// exact error to send.

import type { IncomingHttpHeaders } from 'node:http';
import {
  TRAFFIC_TOKEN_HEADER,
  proxyErrorBody,
  resolveSandboxRoute,
  sandboxNotFoundBody,
  type ProxyErrorBody,
} from '@cove/traffic-proxy';
import type { Logger } from 'pino';
import type { NodeDirectory, NodeView } from '../nodes/node-directory.js';
import type { CatalogEntry, EdgeStore, PausedEntry } from '../store/edge-store.js';
import { tokenMatchesHash } from '@cove/auth-tokens';
import type { SandboxResumer } from './sandbox-resumer.js';
import { ENVD_ACCESS_TOKEN_HEADER, ENVD_PORT } from '@cove/contracts/sandbox';

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
  /** Set when COVE_CONTROL_PLANE_URL is: sandboxes without a route are resumed instead of answered 502. */
  resumer?: SandboxResumer;
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** A catalog entry and the node it names, or undefined where either is missing. */
type Located = { entry: CatalogEntry | undefined; node: NodeView | undefined };

async function locate(sandboxId: string, deps: SandboxRouterDeps): Promise<Located> {
  const entry = await deps.store.getSandbox(sandboxId);
  const node = entry && (await deps.directory.get(entry.nodeId));
  return { entry, node };
}

/** Pauses between catalog lookups after a resume, should the Create's catalog write not be visible yet. */
const RELOOK_DELAYS_MS = [25, 50, 100, 200, 400];

/** Decide where a sandbox request goes. */
export async function routeSandboxRequest(headers: IncomingHttpHeaders, deps: SandboxRouterDeps): Promise<RouteDecision> {
  const route = resolveSandboxRoute(headers, deps.sandboxDomain);
  if (!route.ok) return { ok: false, status: 400, body: proxyErrorBody(400, route.message) };
  const { sandboxId, port } = route;
  let found: Located;
  try {
    found = await locate(sandboxId, deps);
  } catch (err) {
    return catalogUnavailable(err, sandboxId, deps);
  }
  const { entry, node } = found;
  if (entry && node) return checkTraffic(sandboxId, port, entry, node, headers);
  // Only a sandbox without a usable route is woken; a known one (even `recovered`) is routed as is.
  if (!deps.resumer) return { ok: false, status: 502, body: sandboxNotFoundBody(sandboxId) };
  let paused: PausedEntry | undefined;
  try {
    paused = await deps.store.getPaused(sandboxId);
  } catch (err) {
    return catalogUnavailable(err, sandboxId, deps);
  }
  if (paused && !mayWake(paused, port, headers)) return { ok: false, status: 403, body: mayNotWakeBody(sandboxId, port) };
  return resumeAndRoute(sandboxId, port, headers, deps.resumer, deps);
}

/**
 * Whether a request may wake a paused private sandbox (E2B: the private-ingress token, or the envd access token
 * for envd's port). Checked here because the control plane exempts envd's port from its own traffic-token check,
 * which would let anyone who knows the id wake the sandbox through 49983.
 */
function mayWake(paused: PausedEntry, port: number, headers: IncomingHttpHeaders): boolean {
  const traffic = one(headers[TRAFFIC_TOKEN_HEADER]);
  if (traffic && tokenMatchesHash(traffic, paused.trafficTokenHash)) return true;
  if (port !== ENVD_PORT || !paused.envdTokenHash) return false;
  const access = one(headers[ENVD_ACCESS_TOKEN_HEADER]);
  return access !== undefined && tokenMatchesHash(access, paused.envdTokenHash);
}

/** The 403 of a request that may not wake a paused sandbox, whoever refused it (this edge or the control plane). */
function mayNotWakeBody(sandboxId: string, port: number): ProxyErrorBody {
  const headers = port === ENVD_PORT ? `${TRAFFIC_TOKEN_HEADER} or ${ENVD_ACCESS_TOKEN_HEADER}` : TRAFFIC_TOKEN_HEADER;
  return proxyErrorBody(403, `The sandbox is paused and this request may not resume it (missing or invalid ${headers} header)`, { sandboxId });
}

/** Traffic-token rules for a sandbox with a catalog entry. */
function checkTraffic(sandboxId: string, port: number, entry: CatalogEntry, node: NodeView, headers: IncomingHttpHeaders): RouteDecision {
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

/**
 * Ask the control plane to resume the sandbox, then find it: normally in the catalog (the resume's Create
 * passed through the control link), else — a resume through another edge with its own in-process catalog —
 * on the node the control plane named. That route has no traffic-token hash to check, so it serves only what
 * the control plane itself judged (this request's port and token) or the envd port, like a recovered entry.
 */
async function resumeAndRoute(
  sandboxId: string,
  port: number,
  headers: IncomingHttpHeaders,
  resumer: SandboxResumer,
  deps: SandboxRouterDeps,
): Promise<RouteDecision> {
  const { outcome, ownCredentials } = await resumer.resume({
    sandboxId,
    port,
    trafficToken: one(headers[TRAFFIC_TOKEN_HEADER]),
    ...(port === ENVD_PORT ? { envdToken: one(headers[ENVD_ACCESS_TOKEN_HEADER]) } : {}),
  });
  switch (outcome.kind) {
    case 'not_found':
      return { ok: false, status: 502, body: sandboxNotFoundBody(sandboxId) };
    case 'denied':
      return { ok: false, status: 403, body: mayNotWakeBody(sandboxId, port) };
    case 'transitioning':
      return { ok: false, status: 409, body: proxyErrorBody(409, 'sandbox is still transitioning', { sandboxId }) };
    case 'limited':
      // E2B's client proxy answers the team-limit case as such, not as an outage.
      return { ok: false, status: 429, body: proxyErrorBody(429, 'The sandbox could not be resumed: the team has reached its limit of running sandboxes', { sandboxId }) };
    case 'unavailable':
      return { ok: false, status: 503, body: proxyErrorBody(503, 'The sandbox could not be resumed: the control plane is unavailable', { sandboxId }) };
    case 'resumed':
      break;
  }
  try {
    for (let attempt = 0; ; attempt++) {
      const { entry, node } = await locate(sandboxId, deps);
      if (entry && node) return checkTraffic(sandboxId, port, entry, node, headers);
      const delay = RELOOK_DELAYS_MS[attempt];
      if (delay === undefined) break;
      await new Promise((r) => setTimeout(r, delay));
    }
    const node = await deps.directory.get(outcome.nodeId);
    if (!node) {
      deps.log.warn({ sandboxId, nodeId: outcome.nodeId }, 'auto-resume: the control plane named a node this edge does not know');
      return { ok: false, status: 502, body: sandboxNotFoundBody(sandboxId) };
    }
    deps.log.warn({ sandboxId, nodeId: node.nodeId }, 'auto-resume: resumed sandbox not in the catalog; routing to the node the control plane named');
    if (port !== ENVD_PORT && !ownCredentials) {
      return {
        ok: false,
        status: 403,
        body: proxyErrorBody(403, 'Traffic access for this sandbox is not known to the edge yet; only the envd port is reachable', { sandboxId }),
      };
    }
    return { ok: true, sandboxId, port, nodeId: node.nodeId, proxyUrl: node.proxyUrl };
  } catch (err) {
    return catalogUnavailable(err, sandboxId, deps);
  }
}

function catalogUnavailable(err: unknown, sandboxId: string, deps: SandboxRouterDeps): RouteDecision {
  deps.log.error({ err, sandboxId }, 'sandbox catalog lookup failed');
  return { ok: false, status: 503, body: proxyErrorBody(503, 'The sandbox catalog is unavailable', { sandboxId }) };
}
