// The node traffic proxy (reference e2b-infra.md §5.5): edges send sandbox traffic here with
// E2b-Sandbox-Id / E2b-Sandbox-Port headers; it is forwarded to http://<sandbox address>:<port>.
// Only edges talk to it, so every request must carry Cove-Node-Token; the token is stripped before
// forwarding so a sandbox never sees it. Forwarding and the 502 bodies come from @cove/traffic-proxy,
// shared with the edge so both hops fail the way the E2B SDK expects.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  NODE_TOKEN_HEADER,
  SANDBOX_ID_HEADER,
  SANDBOX_PORT_HEADER,
  createUpstreamAgent,
  createUpstreamDispatcher,
  forwardHttp,
  forwardRequestHeaders,
  forwardUpgrade,
  parsePort,
  portClosedBody,
  proxyErrorBody,
  sandboxNotFoundBody,
  sendProxyError,
  writeRawProxyError,
  type ProxyErrorBody,
  type UpstreamFailure,
} from '@cove/traffic-proxy';
import type { Logger } from 'pino';
import { SANDBOX_ID_RE } from '../sandboxes/validate-spec.js';
import { tokensEqual } from '@cove/auth-tokens';
import { ENVD_PORT } from '@cove/contracts/sandbox';
import { maskRequestHost } from '@cove/egress';


export interface NodeProxyOptions {
  nodeToken: string;
  /** Address of a sandbox on this node, undefined when it is not here. */
  lookup: (sandboxId: string) => string | undefined;
  /** E2B's maskRequestHost of a sandbox ('' or undefined = keep the client's Host) */
  maskOf?: (sandboxId: string) => string | undefined;
  log: Logger;
  /**
   * The volume content API and the edge's image sweep (sandbox/volume-content.ts): a request with no
   * E2b-Sandbox-Id whose path is `/volumecontent/…` or `/volumeimages…`, from an edge (node token checked first).
   */
  volumeContent?: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

/**
 * envd routes only the node may call (x-internal in envd's spec, and Cove's own `/cove/…`, e.g. the log ring the
 * node pulls); refused on the envd port, whatever follows them.
 */
const ENVD_INTERNAL_SEGMENTS = new Set(['init', 'metrics', 'freeze', 'unfreeze', 'collapse', 'fsfreeze', 'fsthaw', 'upgrade', 'cove']);
/** Above the edge's 610 s, below envd's 640 s (reference §6.2), so the outer hop always times out first. */
const IDLE_TIMEOUT_MS = 620_000;

type Route =
  | { ok: true; sandboxId: string; port: number; target: string; path: string; host?: string }
  | { ok: false; status: number; body: ProxyErrorBody };

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The request target in origin form (RFC 9112 §3.2), which is what goes upstream: an absolute-form target
 * (`POST http://x/init HTTP/1.1`) becomes its path and query — envd would resolve it to /init all the same —
 * and anything else not starting with '/' (asterisk-form, garbage) is refused (undefined).
 */
function originForm(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  if (url.startsWith('/')) return url;
  if (!/^https?:\/\//i.test(url)) return undefined;
  try {
    const u = new URL(url);
    return `${u.pathname}${u.search}`;
  } catch {
    return undefined;
  }
}

/**
 * The first path segment as any reader of `target` could understand it: query and fragment cut, percent-escapes
 * decoded (repeatedly, so double encoding does not help), backslashes read as slashes, empty and dot segments
 * resolved, lower case. /init/, //init, /./init, /a/../init, /%69nit, /%2finit, /INIT and /init? all give "init".
 */
function firstSegment(target: string): string {
  let path = target.split(/[?#]/, 1)[0] ?? '';
  for (let i = 0; i < 4; i++) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      break;
    }
    if (decoded === path) break;
    path = decoded;
  }
  const segments: string[] = [];
  for (const seg of path.replace(/\\/g, '/').split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(seg);
  }
  return (segments[0] ?? '').toLowerCase();
}

function route(req: IncomingMessage, opts: NodeProxyOptions): Route {
  const token = header(req, NODE_TOKEN_HEADER);
  if (!token || !tokensEqual(token, opts.nodeToken)) {
    return { ok: false, status: 401, body: proxyErrorBody(401, 'Missing or invalid node token') };
  }
  // The node's own sandbox-id rule (it may contain '-'), not the public-host rule of the edge.
  const sandboxId = header(req, SANDBOX_ID_HEADER) ?? '';
  const port = parsePort((header(req, SANDBOX_PORT_HEADER) ?? '').trim());
  if (!SANDBOX_ID_RE.test(sandboxId) || port === undefined) {
    return { ok: false, status: 400, body: proxyErrorBody(400, 'Missing or invalid E2b-Sandbox-Id / E2b-Sandbox-Port headers') };
  }
  const path = originForm(req.url);
  if (path === undefined) return { ok: false, status: 400, body: proxyErrorBody(400, 'The request target must be a path (origin form) or an http URL') };
  if (port === ENVD_PORT && ENVD_INTERNAL_SEGMENTS.has(firstSegment(path))) {
    return { ok: false, status: 404, body: proxyErrorBody(404, 'Not found') };
  }
  const address = opts.lookup(sandboxId);
  if (!address) return { ok: false, status: 502, body: sandboxNotFoundBody(sandboxId) };
  // maskRequestHost (E2B): the sandbox's servers see the mask, never the edge's public name. Not envd's port,
  // whose clients are the SDK and the node.
  const mask = port === ENVD_PORT ? undefined : opts.maskOf?.(sandboxId);
  return { ok: true, sandboxId, port, target: `http://${address}:${port}`, path, ...(mask ? { host: maskRequestHost(mask, port) } : {}) };
}

function upstreamFailureBody(r: Extract<Route, { ok: true }>, failure: UpstreamFailure): ProxyErrorBody {
  if (failure === 'refused') return portClosedBody(r.sandboxId, r.port);
  return proxyErrorBody(502, 'The sandbox could not be reached', { sandboxId: r.sandboxId, port: r.port });
}

/**
 * Keep-alive pools per sandbox, not per address: a killed sandbox's address is soon given to a new one, and a
 * pooled socket of the old sandbox (its veth gone, so it never saw a FIN) would then reach the new sandbox,
 * which answers with a reset. Pools idle for a minute are closed.
 */
class SandboxAgents {
  // node:http for requests with a body, undici for body-less ones (forwardHttp; docs/performance.md, "Proxy").
  private readonly agents = new Map<string, { pools: SandboxPools; usedAt: number }>();
  private readonly sweeper = setInterval(() => this.sweep(60_000), 30_000).unref();

  get(key: string): SandboxPools {
    let entry = this.agents.get(key);
    if (!entry) {
      entry = { pools: { agent: createUpstreamAgent({ maxFreeSockets: 32 }), dispatcher: createUpstreamDispatcher() }, usedAt: 0 };
      this.agents.set(key, entry);
    }
    entry.usedAt = Date.now();
    return entry.pools;
  }

  private sweep(idleMs: number): void {
    const now = Date.now();
    for (const [id, entry] of this.agents) {
      const { agent, dispatcher } = entry.pools;
      const busy = Object.values(agent.sockets).some((list) => (list?.length ?? 0) > 0) || Object.values(dispatcher.stats).some((s) => s.size > 0);
      if (!busy && now - entry.usedAt > idleMs) {
        destroyPools(entry.pools);
        this.agents.delete(id);
      }
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const { pools } of this.agents.values()) destroyPools(pools);
    this.agents.clear();
  }
}

type SandboxPools = { agent: ReturnType<typeof createUpstreamAgent>; dispatcher: ReturnType<typeof createUpstreamDispatcher> };

function destroyPools(pools: SandboxPools): void {
  pools.agent.destroy();
  pools.dispatcher.destroy().catch(() => undefined);
}

export function createNodeProxy(opts: NodeProxyOptions): Server {
  const agents = new SandboxAgents();
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (opts.volumeContent && header(req, SANDBOX_ID_HEADER) === undefined && (req.url?.startsWith('/volumecontent/') || req.url?.startsWith('/volumeimages'))) {
      const token = header(req, NODE_TOKEN_HEADER);
      if (!token || !tokensEqual(token, opts.nodeToken)) {
        req.resume();
        sendProxyError(res, 401, proxyErrorBody(401, 'Missing or invalid node token'));
        return;
      }
      void opts.volumeContent(req, res);
      return;
    }
    const r = route(req, opts);
    if (!r.ok) {
      req.resume();
      sendProxyError(res, r.status, r.body);
      return;
    }
    void forwardHttp(req, res, {
      target: r.target,
      path: r.path,
      headers: forwardRequestHeaders(req.headers, { remove: [NODE_TOKEN_HEADER], ...(r.host ? { set: { host: r.host } } : {}) }),
      // Keyed by address too: a resumed sandbox may come back elsewhere, and its old pooled sockets are dead.
      ...agents.get(`${r.sandboxId}@${r.target}`),
      idleTimeoutMs: IDLE_TIMEOUT_MS,
      onError: (err, failure) => {
        opts.log.debug({ err, sandboxId: r.sandboxId, port: r.port, failure }, 'upstream request failed');
        sendProxyError(res, 502, upstreamFailureBody(r, failure));
      },
    });
  };
  const server = createServer(onRequest);
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const r = route(req, opts);
    if (!r.ok) {
      writeRawProxyError(socket, r.status, r.body);
      return;
    }
    forwardUpgrade(req, socket, head, {
      target: r.target,
      path: r.path,
      headers: forwardRequestHeaders(req.headers, { remove: [NODE_TOKEN_HEADER], upgrade: true, ...(r.host ? { set: { host: r.host } } : {}) }),
      idleTimeoutMs: IDLE_TIMEOUT_MS,
      onError: (_err, failure) => writeRawProxyError(socket, 502, upstreamFailureBody(r, failure)),
    });
  });
  server.on('close', () => agents.close());
  server.keepAliveTimeout = IDLE_TIMEOUT_MS;
  server.headersTimeout = 60_000;
  server.requestTimeout = 0;
  return server;
}
