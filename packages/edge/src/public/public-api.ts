// The edge's public port (docs/observability.md): the routes the control plane redirects SDK clients to with a
// grant — sandbox logs (v1, v2) and metrics, build logs, build status — answered in E2B's public-API shapes from
// the cluster collector (logs, metrics) and the builder node (build status). Nothing else is served here.
// Every request needs a grant that verifies (401 otherwise) and covers exactly this resource (403 otherwise);
// the data asked of the collector is always scoped to the grant's team. Headers the SDK sends along (its API
// key follows the redirect) are never read or logged. With the customer's identity provider configured, people
// and a dashboard read the same routes with its access token instead (`authorization: Bearer`, the read scopes,
// `teamID` naming the team — limited to the token's team claim when COVE_OIDC_TEAM_CLAIM is set).

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { Code, ConnectError } from '@connectrpc/connect';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { BuildState, type BuildLogEntry, type BuildStatusResponse } from '@cove/contracts/orchestrator';
import type { Logger } from 'pino';
import type { EdgeTlsConfig } from '../config.js';
import type { EdgeMetrics } from '../metrics.js';
import type { NodeClients } from '../nodes/node-client.js';
import type { NodeDirectory } from '../nodes/node-directory.js';
import { BuildLogsReply, CollectorFailed, ManyMetricsReply, MetricsReply, SandboxLogsReply, type CollectorClient, type EdgeMetric } from './collector-client.js';
import { GrantRefused, type Grant, type GrantScope, type GrantVerifier } from './grant-verifier.js';
import { bearerToken } from '@cove/auth-tokens';
import { OidcError, type OidcVerifier } from '@cove/auth-tokens/oidc';

export const MAX_SANDBOX_LOG_LIMIT = 1000;
export const MAX_BUILD_LOG_LIMIT = 100;
const MAX_METRICS_SANDBOXES = 100;
/** A level-filtered status page scans at most this many pages of the build's log. */
const MAX_SCAN_PAGES = 200;

export interface PublicApiDeps {
  /** Undefined = grants are off (COVE_PUBLIC_GRANTS=off): only OIDC tokens read these routes. */
  grants: GrantVerifier | undefined;
  oidc?: { verifier: OidcVerifier; scopes: readonly string[]; teamClaim: string | undefined } | undefined;
  /** Browser origins (a dashboard) that may call these routes with a bearer token; empty = no CORS. */
  corsOrigins?: readonly string[];
  /** Undefined = no collector configured: log and metric routes answer 503. */
  collector: CollectorClient | undefined;
  directory: NodeDirectory;
  nodeClients: NodeClients;
  metrics: EdgeMetrics;
  log: Logger;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const bad = (message: string) => new HttpError(400, `invalid query: ${message}`);

type Query = URLSearchParams;
/** One value of a query parameter; repeated parameters are refused rather than guessed at. */
function param(q: Query, name: string): string | undefined {
  const all = q.getAll(name);
  if (all.length > 1) throw bad(`${name} is given more than once`);
  return all[0];
}
function uint(q: Query, name: string, max = 8_640_000_000_000_000): number | undefined {
  const v = param(q, name);
  if (v === undefined) return undefined;
  if (!/^\d{1,20}$/.test(v)) throw bad(`${name} must be a non-negative integer`);
  const n = Number(v);
  if (n > max) throw bad(`${name} is too large`);
  return n;
}
function oneOf<T extends string>(q: Query, name: string, values: readonly T[]): T | undefined {
  const v = param(q, name);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw bad(`${name} must be one of ${values.join(', ')}`);
  return v as T;
}
const LEVELS = ['debug', 'info', 'warn', 'error'] as const;
type Level = (typeof LEVELS)[number];
const LEVEL_RANK: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const DIRECTIONS = ['forward', 'backward'] as const;

function range(q: Query, unit: 'ms' | 's'): { start?: number; end?: number } {
  const max = unit === 'ms' ? 8_640_000_000_000_000 : 8_640_000_000_000;
  const start = uint(q, 'start', max);
  const end = uint(q, 'end', max);
  if (start !== undefined && end !== undefined && start > end) throw bad('start must not be after end');
  return { start, end };
}

/** E2B's public metric (camelCase) from the edge shape (snake_case). */
function metricView(m: EdgeMetric) {
  return {
    timestamp: m.timestamp,
    timestampUnix: m.timestamp_unix,
    cpuUsedPct: m.cpu_used_pct,
    cpuCount: m.cpu_count,
    memUsed: m.mem_used,
    memTotal: m.mem_total,
    memCache: m.mem_cache,
    diskUsed: m.disk_used,
    diskTotal: m.disk_total,
  };
}

function levelOf(s: string): Level {
  const l = s.toLowerCase();
  if (l === 'warning') return 'warn';
  return (LEVELS as readonly string[]).includes(l) ? (l as Level) : 'info';
}

function buildEntryView(e: BuildLogEntry) {
  return {
    timestamp: (e.timestamp ? timestampDate(e.timestamp) : new Date()).toISOString(),
    level: levelOf(e.level),
    message: e.message,
    ...(e.step ? { step: e.step } : {}),
  };
}

const STATE: Partial<Record<BuildState, 'building' | 'ready' | 'error'>> = {
  [BuildState.BUILDING]: 'building',
  [BuildState.READY]: 'ready',
  [BuildState.ERROR]: 'error',
};

const SANDBOX_ID = '([a-z0-9]{1,128})';
const SEGMENT = '([^/]{1,256})';
const ROUTES: Array<{ re: RegExp; name: string; scope: GrantScope }> = [
  { re: new RegExp(`^/sandboxes/${SANDBOX_ID}/logs$`), name: 'logs.v1', scope: 'sandbox.logs' },
  { re: new RegExp(`^/v2/sandboxes/${SANDBOX_ID}/logs$`), name: 'logs.v2', scope: 'sandbox.logs' },
  { re: /^\/sandboxes\/metrics$/, name: 'metrics.many', scope: 'sandbox.metrics' },
  { re: new RegExp(`^/sandboxes/${SANDBOX_ID}/metrics$`), name: 'metrics', scope: 'sandbox.metrics' },
  { re: new RegExp(`^/templates/${SEGMENT}/builds/${SEGMENT}/logs$`), name: 'build.logs', scope: 'build.logs' },
  { re: new RegExp(`^/templates/${SEGMENT}/builds/${SEGMENT}/status$`), name: 'build.status', scope: 'build.status' },
];

export function createPublicServer(deps: PublicApiDeps, tls: EdgeTlsConfig | undefined): Server {
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    // No route reads a body.
    req.resume();
    const started = process.hrtime.bigint();
    let routeName = 'unmatched';
    // CORS for the configured dashboard origins only, exact match; no credentials (the token is a header the page
    // sets, never a cookie), so another site can neither read these answers nor make a browser send a token.
    const origin = req.headers.origin;
    const cors: Record<string, string> = origin !== undefined && deps.corsOrigins?.includes(origin) ? { 'access-control-allow-origin': origin, vary: 'Origin' } : {};
    if (req.method === 'OPTIONS') {
      if (!cors['access-control-allow-origin']) {
        res.writeHead(403, { 'content-type': 'application/json', vary: 'Origin' });
        return void res.end(JSON.stringify({ code: 403, error: 'cors_origin', message: 'this origin may not call the public routes (COVE_PUBLIC_CORS_ORIGINS)' }));
      }
      res.writeHead(204, { ...cors, 'access-control-allow-methods': 'GET, HEAD', 'access-control-allow-headers': 'authorization', 'access-control-max-age': '600' });
      return void res.end();
    }
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { ...cors, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
      res.end(text);
      deps.metrics.publicRequests.inc({ route: routeName, status: String(status) });
      deps.metrics.publicLatency.observe({ route: routeName }, Number(process.hrtime.bigint() - started) / 1e9);
    };
    const run = async () => {
      const url = new URL(req.url ?? '/', 'http://edge');
      const route = ROUTES.find((r) => r.re.test(url.pathname));
      if (!route) throw new HttpError(404, `no route ${url.pathname} on the public port`);
      routeName = route.name;
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'method not allowed');
      const m = route.re.exec(url.pathname)!;
      const params = m.slice(1).map((s) => safeDecode(s));
      const grant = await authorize(deps, req, url, route, params);
      if (grant.scope !== route.scope) throw new GrantRefused(403, `cove_grant is for ${grant.scope}, not ${route.scope}`);
      return answer(deps, route.name, params, url.searchParams, grant);
    };
    run()
      .then((body) => send(200, body))
      .catch((err: unknown) => {
        if (err instanceof HttpError || err instanceof GrantRefused) {
          if (err instanceof GrantRefused) {
            deps.metrics.grantRefusals.inc({ status: String(err.status) });
            if (err.error) return send(err.status, { code: err.status, error: err.error, message: err.message });
          }
          return send(err.status, { code: err.status, message: err.message });
        }
        if (err instanceof CollectorFailed) {
          deps.metrics.collectorErrors.inc();
          deps.log.warn({ err: err.message, cause: (err.cause as Error | undefined)?.message }, 'public port: collector query failed');
          return send(502, { code: 502, message: err.message });
        }
        deps.log.error({ err, route: routeName }, 'public port request failed');
        return send(500, { code: 500, message: 'internal error' });
      });
  };
  return tls ? createHttpsServer({ cert: tls.cert, key: tls.key }, handler) : createHttpServer(handler);
}

/**
 * The request's access: a grant from the control plane (`cove_grant`, SDK callers) or, with OIDC configured and
 * no grant given, the caller's bearer token from the customer's provider. An OIDC token covers a whole team (the
 * `teamID` the caller names), so the access made for it covers exactly the resource asked for.
 */
async function authorize(deps: PublicApiDeps, req: IncomingMessage, url: URL, route: { name: string; scope: GrantScope }, p: string[]): Promise<Grant> {
  const grantToken = url.searchParams.get('cove_grant');
  const auth = req.headers.authorization;
  if (grantToken !== null || deps.oidc === undefined || auth === undefined) {
    if (!deps.grants) throw new GrantRefused(401, 'this cluster serves these routes only to tokens from its identity provider (authorization: Bearer)', 'token_missing');
    return deps.grants.verify(grantToken);
  }
  const token = bearerToken(auth);
  if (token === undefined) throw new GrantRefused(401, 'authorization must be "Bearer <token from the cluster identity provider>"', 'token_malformed');
  let principal;
  try {
    principal = await deps.oidc.verifier.verify(token, deps.oidc.scopes);
  } catch (err) {
    if (err instanceof OidcError) throw new GrantRefused(err.status, err.message, err.code);
    throw err;
  }
  const teamID = param(url.searchParams, 'teamID');
  if (teamID === undefined || !/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/.test(teamID)) throw bad('teamID must name the team whose data is read');
  if (deps.oidc.teamClaim !== undefined) {
    const c = principal.claims[deps.oidc.teamClaim];
    const teams = typeof c === 'string' ? [c] : Array.isArray(c) ? c.filter((t): t is string => typeof t === 'string') : [];
    if (!teams.includes(teamID)) throw new GrantRefused(403, `bearer token does not cover team ${teamID}`, 'token_claims');
    // A build's status comes from the nodes, which do not know its team: only a token for every team reads it.
    if (route.scope === 'build.status') throw new GrantRefused(403, `build status needs a token for every team (${deps.oidc.teamClaim} limits this one)`, 'token_claims');
  }
  const base = { sub: teamID, scope: route.scope };
  switch (route.scope) {
    case 'sandbox.logs':
      return { ...base, sandbox_ids: [p[0]!] };
    case 'sandbox.metrics':
      return route.name === 'metrics.many'
        ? { ...base, sandbox_ids: url.searchParams.getAll('sandbox_ids').flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean).slice(0, MAX_METRICS_SANDBOXES + 1) }
        : { ...base, sandbox_ids: [p[0]!] };
    case 'build.logs':
    case 'build.status':
      return { ...base, template_id: p[0]!, build_id: p[1]! };
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new HttpError(400, 'malformed path');
  }
}

function needSandbox(grant: Grant, id: string): void {
  if (!grant.sandbox_ids?.includes(id)) throw new GrantRefused(403, `cove_grant does not cover sandbox ${id}`);
}

function needBuild(grant: Grant, templateId: string, buildId: string): void {
  if (grant.template_id !== templateId || grant.build_id !== buildId) throw new GrantRefused(403, `cove_grant does not cover build ${buildId} of template ${templateId}`);
}

function collectorOf(deps: PublicApiDeps): CollectorClient {
  if (!deps.collector) throw new HttpError(503, 'this cluster has no collector configured (COVE_COLLECTOR_URL)');
  return deps.collector;
}

async function answer(deps: PublicApiDeps, name: string, p: string[], q: Query, grant: Grant): Promise<unknown> {
  const teamID = grant.sub;
  switch (name) {
    case 'logs.v1': {
      const id = p[0]!;
      needSandbox(grant, id);
      const { start, end } = range(q, 'ms');
      const limit = Math.min(uint(q, 'limit') ?? MAX_SANDBOX_LOG_LIMIT, MAX_SANDBOX_LOG_LIMIT);
      const r = await collectorOf(deps).get(`/v1/sandboxes/${encodeURIComponent(id)}/logs`, { teamID, start, end, limit, direction: 'forward' }, SandboxLogsReply);
      return { logs: r.logs.slice(0, limit), logEntries: r.logEntries.slice(0, limit) };
    }
    case 'logs.v2': {
      const id = p[0]!;
      needSandbox(grant, id);
      const cursor = uint(q, 'cursor');
      const limit = Math.min(uint(q, 'limit') ?? MAX_SANDBOX_LOG_LIMIT, MAX_SANDBOX_LOG_LIMIT);
      const direction = oneOf(q, 'direction', DIRECTIONS) ?? 'forward';
      const level = oneOf(q, 'level', LEVELS);
      const search = param(q, 'search');
      if (search !== undefined && search.length > 256) throw bad('search is longer than 256 characters');
      // The cursor is a time in ms: entries after it going forward, before it going backward.
      const window = direction === 'forward' ? { start: cursor } : { end: cursor };
      const r = await collectorOf(deps).get(`/v1/sandboxes/${encodeURIComponent(id)}/logs`, { teamID, ...window, limit, direction, level, search }, SandboxLogsReply);
      return { logs: r.logEntries.slice(0, limit) };
    }
    case 'metrics': {
      const id = p[0]!;
      needSandbox(grant, id);
      const { start, end } = range(q, 's');
      const r = await collectorOf(deps).get(`/v1/sandboxes/${encodeURIComponent(id)}/metrics`, { teamID, start, end }, MetricsReply);
      return r.map(metricView);
    }
    case 'metrics.many': {
      const raw = q.getAll('sandbox_ids').flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
      const ids = [...new Set(raw)];
      if (ids.length === 0) throw bad('sandbox_ids must name at least one sandbox');
      if (ids.length > MAX_METRICS_SANDBOXES) throw bad(`sandbox_ids names more than ${MAX_METRICS_SANDBOXES} sandboxes`);
      for (const id of ids) {
        if (!/^[a-z0-9]{1,128}$/.test(id)) throw bad('sandbox_ids must be lowercase letters and digits');
        needSandbox(grant, id);
      }
      const r = await collectorOf(deps).get('/v1/sandboxes/metrics', { teamID, sandbox_ids: ids.join(',') }, ManyMetricsReply);
      const out: Record<string, ReturnType<typeof metricView>> = {};
      for (const id of ids) {
        const m = r.sandboxes[id];
        if (m) out[id] = metricView(m);
      }
      return { sandboxes: out };
    }
    case 'build.logs': {
      const [templateId, buildId] = p as [string, string];
      needBuild(grant, templateId, buildId);
      const cursor = uint(q, 'cursor');
      const limit = Math.min(uint(q, 'limit') ?? MAX_BUILD_LOG_LIMIT, MAX_BUILD_LOG_LIMIT);
      const direction = oneOf(q, 'direction', DIRECTIONS) ?? 'forward';
      const level = oneOf(q, 'level', LEVELS);
      oneOf(q, 'source', ['temporary', 'persistent'] as const);
      const r = await collectorOf(deps).get(`/v1/templates/builds/${encodeURIComponent(buildId)}/logs`, { templateID: templateId, teamID, cursor, limit, direction, level }, BuildLogsReply);
      return {
        logs: r.logEntries.slice(0, limit).map((e) => {
          const step = e.step ?? e.fields['cove.build.step'] ?? e.fields.step;
          return { timestamp: e.timestamp, level: e.level, message: e.message, ...(step ? { step } : {}) };
        }),
      };
    }
    case 'build.status': {
      const [templateId, buildId] = p as [string, string];
      needBuild(grant, templateId, buildId);
      const offset = uint(q, 'logsOffset', 0xffffffff) ?? 0;
      const limit = Math.min(uint(q, 'limit') ?? MAX_BUILD_LOG_LIMIT, MAX_BUILD_LOG_LIMIT);
      const level = oneOf(q, 'level', LEVELS);
      return buildStatus(deps, grant, templateId, buildId, offset, limit, level);
    }
    default:
      throw new HttpError(404, 'no such route');
  }
}

/**
 * BuildStatus from the builder node (the grant names it), else from any other node: a finished build's log and
 * manifest are in cluster storage. The builder goes first, since another node only sees what storage holds so far
 * and would call a running build failed.
 */
async function askNodes(deps: PublicApiDeps, grant: Grant, templateId: string, buildId: string, offset: number, limit: number): Promise<BuildStatusResponse | undefined> {
  const nodes = (await deps.directory.list())
    .filter((n) => n.status !== 'unhealthy')
    .sort((a, b) => Number(b.nodeId === grant.node_id) - Number(a.nodeId === grant.node_id));
  for (const n of nodes) {
    try {
      return await deps.nodeClients.buildStatus(n.nodeId, n.rpcUrl, templateId, buildId, offset, limit);
    } catch (err) {
      const code = ConnectError.from(err).code;
      if (code === Code.NotFound || code === Code.Unavailable || code === Code.DeadlineExceeded) continue;
      throw err;
    }
  }
  return undefined;
}

async function buildStatus(deps: PublicApiDeps, grant: Grant, templateId: string, buildId: string, offset: number, limit: number, level: Level | undefined) {
  const base = { templateID: templateId, buildID: buildId };
  const recorded = grant.build_state;
  // Not started yet: no node has it, and none is asked.
  if (recorded?.status === 'waiting' || limit === 0) {
    return { ...base, status: recorded?.status ?? 'building', logEntries: [], logs: [], ...(recorded?.reason ? { reason: recorded.reason } : {}) };
  }
  let res = await askNodes(deps, grant, templateId, buildId, level ? 0 : offset, level ? MAX_BUILD_LOG_LIMIT : limit);
  if (!res) {
    // No node knows it (its node left): the state the control plane recorded, with no log entries.
    return { ...base, status: recorded?.status ?? 'building', logEntries: [], logs: [], ...(recorded?.reason ? { reason: recorded.reason } : {}) };
  }
  let entries = res.logEntries;
  if (level) {
    // Offsets count matching entries, as E2B's do with a level filter.
    const min = LEVEL_RANK[level];
    const matching: BuildLogEntry[] = [];
    for (let n = 0, at = 0; n < MAX_SCAN_PAGES; n++) {
      matching.push(...res.logEntries.filter((e) => LEVEL_RANK[levelOf(e.level)] >= min));
      at += res.logEntries.length;
      if (matching.length >= offset + limit || res.logEntries.length === 0 || at >= res.logsTotal) break;
      const next = await askNodes(deps, grant, templateId, buildId, at, MAX_BUILD_LOG_LIMIT);
      if (!next) break;
      res = next;
    }
    entries = matching.slice(offset, offset + limit);
  }
  const status = STATE[res.state] ?? 'building';
  const logEntries = entries.slice(0, limit).map(buildEntryView);
  const info: Record<string, unknown> = { ...base, status, logEntries, logs: logEntries.map((e) => `[${e.timestamp}] ${e.message}`) };
  if (status === 'error') {
    const message = res.failure?.message || recorded?.reason?.message || 'the build failed';
    const step = res.failure?.step || recorded?.reason?.step;
    info.reason = { message, ...(step ? { step } : {}) };
  }
  return info;
}
