// The control link (reference e2b-infra.md §3.2): the control plane calls
// /cove.orchestrator.v1.{SandboxService,TemplateService,InfoService}/* on the edge's API port with the cluster token and
// `cove-node-id`; the edge checks both and forwards the HTTP/2 stream verbatim to that node's RPC URL —
// headers (authorization replaced by that node's own token), body frames both ways with backpressure, trailers,
// cancellation — so it needs no knowledge of the messages. Create/Delete/Pause also carry `cove-sandbox-id`;
// once the node answered, the catalog is updated *before* the reply goes on, so the first sandbox request that
// follows a Create always finds its route, and the first one after a Pause finds none (and may wake it, with
// the credentials the Pause left behind for a private sandbox: a PausedEntry).
// Create from a snapshot (a resume) is a Create like any other; Snapshot leaves the sandbox where it runs.

import { constants as h2, type Http2ServerRequest, type Http2ServerResponse, type OutgoingHttpHeaders } from 'node:http2';
import type { Logger } from 'pino';
import type { NodeCredentials } from '../nodes/node-credentials.js';
import type { NodeDirectory } from '../nodes/node-directory.js';
import type { CatalogEntry, EdgeStore } from '../store/edge-store.js';
import { tokenHash } from '@cove/auth-tokens';
import { LINK_SANDBOX_ID_HEADER, LINK_TRAFFIC_TOKEN_HEADER, NODE_ID_HEADER } from '@cove/contracts/link';
import type { ClusterAuth } from '../api/cluster-auth.js';
import { CreateTap } from './create-tap.js';
import type { H2SessionPool } from './h2-session-pool.js';
import { GrpcCode, replyRpcError } from './rpc-reply.js';

/** Path prefixes forwarded to nodes; everything else on h2 is served by the edge itself. */
export const CONTROL_LINK_PREFIXES = [
  '/cove.orchestrator.v1.SandboxService/',
  '/cove.orchestrator.v1.TemplateService/',
  '/cove.orchestrator.v1.InfoService/',
];

const CREATE = '/cove.orchestrator.v1.SandboxService/Create';
const DELETE = '/cove.orchestrator.v1.SandboxService/Delete';
const PAUSE = '/cove.orchestrator.v1.SandboxService/Pause';
/** Request headers the edge consumes; not forwarded. */
const NOT_FORWARDED = new Set(['authorization', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'host', 'http2-settings']);
/** gRPC status fields a trailers-only response carries in its headers; moved to real trailers. */
const STATUS_FIELDS = ['grpc-status', 'grpc-message', 'grpc-status-details-bin'];

/** What the control link needs. */
export interface ControlLinkDeps {
  /** The cluster token, or (OIDC mode) only the customer's identity provider's tokens. */
  auth: ClusterAuth;
  credentials: NodeCredentials;
  directory: NodeDirectory;
  store: EdgeStore;
  sessions: H2SessionPool;
  log: Logger;
  /**
   * Take a sandbox's route out of the traffic proxy (HAProxy) before its Delete reaches the node; the catalog
   * keeps the entry until the node answers. Unset = no traffic proxy.
   */
  withdrawRoute?: (sandboxId: string) => Promise<void>;
}

/** True when `path` belongs to the control link. */
export function isControlLinkPath(path: string | undefined): boolean {
  return path !== undefined && CONTROL_LINK_PREFIXES.some((p) => path.startsWith(p));
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Handle one control-link call arriving on the edge's HTTP/2 server. */
export async function handleControlLink(req: Http2ServerRequest, res: Http2ServerResponse, deps: ControlLinkDeps): Promise<void> {
  const auth = await deps.auth.check(req.headers);
  if (!auth.ok) {
    const code = auth.status === 503 ? GrpcCode.UNAVAILABLE : auth.status === 403 ? GrpcCode.PERMISSION_DENIED : GrpcCode.UNAUTHENTICATED;
    replyRpcError(req, res, code, auth.message);
    return;
  }
  const nodeId = one(req.headers[NODE_ID_HEADER]);
  if (!nodeId) {
    replyRpcError(req, res, GrpcCode.INVALID_ARGUMENT, `missing ${NODE_ID_HEADER} header`);
    return;
  }
  let node;
  try {
    node = await deps.directory.get(nodeId);
  } catch (err) {
    deps.log.error({ err, nodeId }, 'node lookup failed');
    replyRpcError(req, res, GrpcCode.UNAVAILABLE, 'node registry unavailable');
    return;
  }
  if (!node) {
    replyRpcError(req, res, GrpcCode.NOT_FOUND, `node ${nodeId} is not registered with this edge`);
    return;
  }
  const held = await takeRouteForPause(req, deps, node.nodeId);
  await withdrawRouteForDelete(req, deps);
  forward(req, res, deps, node.nodeId, node.rpcUrl, held);
}

/**
 * A Pause takes the sandbox's route away *before* the node starts: traffic arriving meanwhile then finds no
 * route and goes the auto-resume way (the control plane waits for the pause to settle, then resumes), instead
 * of reaching a node that is dumping the sandbox. Returns the entry, put back if the Pause fails.
 */
async function takeRouteForPause(req: Http2ServerRequest, deps: ControlLinkDeps, nodeId: string): Promise<{ sandboxId: string; entry: CatalogEntry } | undefined> {
  if ((req.headers[':path'] ?? req.url) !== PAUSE) return undefined;
  const sandboxId = one(req.headers[LINK_SANDBOX_ID_HEADER]);
  if (!sandboxId || !/^[a-z0-9]+$/.test(sandboxId)) return undefined;
  try {
    const entry = await deps.store.getSandbox(sandboxId);
    if (!entry || entry.nodeId !== nodeId) return undefined;
    // A private sandbox's wake credentials go in first, so no request finds it without a route and without them.
    if (entry.trafficTokenHash) {
      await deps.store.putPaused(sandboxId, {
        trafficTokenHash: entry.trafficTokenHash,
        ...(entry.envdTokenHash ? { envdTokenHash: entry.envdTokenHash } : {}),
        pausedAt: Date.now(),
      });
    }
    await deps.store.deleteSandbox(sandboxId, nodeId);
    return { sandboxId, entry };
  } catch (err) {
    deps.log.warn({ err, sandboxId }, 'catalog: could not take the route of a sandbox being paused');
    return undefined;
  }
}

/** A Delete: the traffic proxy stops routing to the sandbox first (its requests then reach the Node edge). */
async function withdrawRouteForDelete(req: Http2ServerRequest, deps: ControlLinkDeps): Promise<void> {
  if (!deps.withdrawRoute || (req.headers[':path'] ?? req.url) !== DELETE) return;
  const sandboxId = one(req.headers[LINK_SANDBOX_ID_HEADER]);
  if (sandboxId) await deps.withdrawRoute(sandboxId);
}

function forward(
  req: Http2ServerRequest,
  res: Http2ServerResponse,
  deps: ControlLinkDeps,
  nodeId: string,
  rpcUrl: string,
  held?: { sandboxId: string; entry: CatalogEntry },
): void {
  // The caller may have cancelled while the node was looked up.
  if (res.stream.destroyed) return;
  const path = req.headers[':path'] ?? req.url;
  const log = deps.log.child({ nodeId, method: path });
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.startsWith(':') || NOT_FORWARDED.has(name) || value === undefined) continue;
    headers[name] = value;
  }
  headers[':method'] = req.method;
  headers[':path'] = path;
  headers.authorization = `Bearer ${deps.credentials.tokenFor(nodeId)}`;

  // A Create's envd access token, for the PausedEntry a later Pause of a private sandbox leaves.
  const tap = path === CREATE ? new CreateTap(one(req.headers['content-type'])) : undefined;
  if (tap) req.on('data', (chunk: Buffer) => tap.request.push(chunk));

  // The catalog is settled once per call: after the node's answer, or (no answer) as for a failed call.
  let settled = false;
  const settle = (code: string | undefined): Promise<void> => {
    if (settled) return Promise.resolve();
    settled = true;
    return recordCatalog(req, deps, nodeId, path, code, log, held, tap);
  };

  let upstream;
  try {
    upstream = deps.sessions.get(rpcUrl).request(headers, { endStream: false });
  } catch (err) {
    log.warn({ err }, 'control link: node session failed');
    void settle(undefined);
    replyRpcError(req, res, GrpcCode.UNAVAILABLE, `node ${nodeId} is unreachable`);
    return;
  }

  let trailers: Record<string, string | string[] | undefined> = {};
  let grpcStatus: string | undefined;
  let httpStatus = 0;
  let responded = false;

  upstream.on('response', (upHeaders) => {
    responded = true;
    if (res.stream.destroyed || res.writableEnded) {
      upstream.close(h2.NGHTTP2_CANCEL);
      return;
    }
    const out: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(upHeaders)) {
      if (name.startsWith(':') || value === undefined) continue;
      if (STATUS_FIELDS.includes(name)) trailers[name] = value;
      else out[name] = value;
    }
    grpcStatus = one(trailers['grpc-status']);
    httpStatus = Number(upHeaders[':status'] ?? 200);
    if (tap) tap.response.contentType = one(upHeaders['content-type']);
    res.writeHead(httpStatus, out);
  });
  upstream.on('trailers', (t) => {
    trailers = { ...trailers, ...t };
    grpcStatus = one(trailers['grpc-status']) ?? grpcStatus;
  });
  upstream.on('data', (chunk: Buffer) => {
    tap?.response.push(chunk);
    if (!res.write(chunk)) {
      upstream.pause();
      res.once('drain', () => upstream.resume());
    }
  });
  upstream.on('end', () => {
    // The Connect protocol (unary) has no grpc-status: its outcome is the HTTP status.
    const code = grpcStatus ?? (httpStatus === 200 ? '0' : httpStatus === 404 ? String(GrpcCode.NOT_FOUND) : undefined);
    void settle(code).finally(() => {
      if (res.writableEnded || res.stream.destroyed) return;
      const t: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(trailers)) if (!k.startsWith(':') && v !== undefined) t[k] = v;
      if (Object.keys(t).length > 0) res.addTrailers(t);
      res.end();
    });
  });
  upstream.on('error', (err) => {
    log.warn({ err }, 'control link: upstream stream failed');
    void settle(undefined);
    if (!responded) replyRpcError(req, res, GrpcCode.UNAVAILABLE, `node ${nodeId} is unreachable`);
    else if (!res.stream.destroyed) res.stream.close(h2.NGHTTP2_INTERNAL_ERROR);
  });
  upstream.on('close', () => {
    // Reset by the node without an error event (e.g. RST_STREAM CANCEL): pass the reset on.
    if (!res.writableEnded && responded && !res.stream.destroyed && upstream.rstCode !== h2.NGHTTP2_NO_ERROR) {
      res.stream.close(upstream.rstCode ?? h2.NGHTTP2_INTERNAL_ERROR);
    }
  });

  req.pipe(upstream);
  res.on('close', () => {
    if (!res.writableFinished && !upstream.destroyed) upstream.close(h2.NGHTTP2_CANCEL);
  });
}

/** Catalog side effects of a completed Create/Delete/Pause. Failures are logged: the node has already acted. */
async function recordCatalog(
  req: Http2ServerRequest,
  deps: ControlLinkDeps,
  nodeId: string,
  path: string,
  grpcStatus: string | undefined,
  log: Logger,
  held?: { sandboxId: string; entry: CatalogEntry },
  tap?: CreateTap,
): Promise<void> {
  if (held && grpcStatus !== '0') {
    // The pause did not happen: the sandbox runs on, its route comes back (unless a newer one was written).
    try {
      if (!(await deps.store.getSandbox(held.sandboxId))) {
        await deps.store.putSandbox(held.sandboxId, held.entry);
        await deps.store.deletePaused(held.sandboxId);
      }
    } catch (err) {
      log.error({ err, sandboxId: held.sandboxId }, 'catalog: could not restore the route after a failed pause');
    }
    return;
  }
  if (path !== CREATE && path !== DELETE && path !== PAUSE) return;
  const sandboxId = one(req.headers[LINK_SANDBOX_ID_HEADER]);
  if (!sandboxId || !/^[a-z0-9]+$/.test(sandboxId)) {
    log.warn(`control link: Create/Delete/Pause without a valid ${LINK_SANDBOX_ID_HEADER}; catalog relies on heartbeats`);
    return;
  }
  try {
    if (path === CREATE && grpcStatus === '0') {
      const trafficToken = one(req.headers[LINK_TRAFFIC_TOKEN_HEADER]);
      const envdTokenHash = tap?.envdTokenHash();
      await deps.store.putSandbox(sandboxId, {
        nodeId,
        trafficTokenHash: trafficToken ? tokenHash(trafficToken) : undefined,
        ...(envdTokenHash ? { envdTokenHash } : {}),
        ...tap?.directRoute(),
        createdAt: Date.now(),
      });
      // Running again (a resume is a Create): its route is what guards it now.
      await deps.store.deletePaused(sandboxId);
      log.debug({ sandboxId }, 'catalog: sandbox created');
    } else if (path === DELETE && (grpcStatus === '0' || grpcStatus === String(GrpcCode.NOT_FOUND))) {
      await deps.store.deleteSandbox(sandboxId, nodeId);
      log.debug({ sandboxId }, 'catalog: sandbox deleted');
    } else if (path === PAUSE && grpcStatus === '0') {
      // The sandbox left the node (its snapshot is in cluster storage); only this node's entry goes, since
      // a resume elsewhere may already have written a newer one.
      await deps.store.deleteSandbox(sandboxId, nodeId);
      log.info({ sandboxId }, 'catalog: sandbox paused, route removed');
    }
  } catch (err) {
    log.error({ err, sandboxId }, 'catalog update after control-link call failed');
  }
}
