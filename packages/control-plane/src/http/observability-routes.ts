// Sandbox logs and metrics, build logs and build status (docs/observability.md): the control plane authenticates
// the API key, checks that the sandbox or build is the team's, validates the query the way E2B's API does, and
// answers `307` to the same path on the cluster's public port with a short-lived grant. It never reads, relays or
// stores a log line or a per-sandbox metric: the unchanged SDK follows the redirect (undici's fetch keeps the
// method on a 307, also to another origin). Team metrics are the control plane's own (its sandbox records).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { BadRequest, ClusterUnavailable, NotFound, SandboxNotFound } from '../errors.js';
import type { components } from '../gen/public-api.js';
import { JWKS_PATH, type GrantSigner, type GrantSubject } from '../observability/grants.js';
import type { Cluster, ClusterStore } from '../store/cluster-store.js';
import type { SandboxStore } from '../store/sandbox-store.js';
import type { TemplateService } from '../templates/template-service.js';
import { teamOf } from './auth.js';
import { parse } from './validation.js';

type S = components['schemas'];

/** E2B's caps: a sandbox-log page holds at most 1000 entries, a build-log page 100; more is clamped, not refused. */
export const MAX_SANDBOX_LOG_LIMIT = 1000;
export const MAX_BUILD_LOG_LIMIT = 100;
export const MAX_METRICS_SANDBOXES = 100;
/** The longest window team metrics cover, and the most points one answer has. */
const MAX_TEAM_WINDOW_S = 31 * 24 * 3600;
const MAX_TEAM_POINTS = 360;
/** Sandbox lifetimes one team-metrics answer reads at most. */
const MAX_LIFETIMES = 200_000;
/** The query parameter the grant rides in (the SDK's own parameters never use it). */
export const GRANT_PARAM = 'cove_grant';

const sandboxId = z.string().min(1).max(128).regex(/^[a-z0-9]+$/, 'must be lowercase letters and digits');
const SandboxParams = z.object({ sandboxID: sandboxId });
const BuildParams = z.object({ templateID: z.string().min(1).max(256), buildID: z.string().min(1).max(128) });
const TeamParams = z.object({ teamID: z.string().min(1).max(128) });

/** A non-negative integer in a query string; anything else is a clear 400, never NaN. */
const uint = (what: string, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .regex(/^\d{1,20}$/, `${what} must be a non-negative integer`)
    .transform(Number)
    .refine((n) => n <= max, `${what} is too large`);
/** A limit: non-negative integer, clamped to `cap` (E2B clamps too). */
const limit = (cap: number) => uint('limit').transform((n) => Math.min(n, cap));
const level = z.enum(['debug', 'info', 'warn', 'error']);
const direction = z.enum(['forward', 'backward']);
// Times are bounded to what a Date can hold; in unix seconds and milliseconds respectively.
const unixS = (what: string) => uint(what, 8_640_000_000_000);
const unixMs = (what: string) => uint(what, 8_640_000_000_000_000);


// Unknown parameters pass through (E2B ignores them); a caller's own cove_grant is replaced by ours.
const V1LogsQuery = z.object({ start: unixMs('start').optional(), end: unixMs('end').optional(), limit: limit(MAX_SANDBOX_LOG_LIMIT).optional(), direction: direction.optional(), level: level.optional(), search: z.string().max(256).optional() });
const V2LogsQuery = z.object({ cursor: unixMs('cursor').optional(), limit: limit(MAX_SANDBOX_LOG_LIMIT).optional(), direction: direction.optional(), level: level.optional(), search: z.string().max(256).optional() });
const MetricsQuery = z.object({ start: unixS('start').optional(), end: unixS('end').optional() });
const ManyMetricsQuery = z.object({ sandbox_ids: z.union([z.string(), z.array(z.string())]) });
const BuildLogsQuery = z.object({ cursor: unixMs('cursor').optional(), limit: limit(MAX_BUILD_LOG_LIMIT).optional(), direction: direction.optional(), level: level.optional(), source: z.enum(['temporary', 'persistent']).optional() });
const BuildStatusQuery = z.object({ logsOffset: uint('logsOffset', 0xffffffff).optional(), limit: limit(MAX_BUILD_LOG_LIMIT).optional(), level: level.optional() });
const TeamMetricsQuery = z.object({ start: unixS('start').optional(), end: unixS('end').optional() });
const TeamMaxQuery = TeamMetricsQuery.extend({ metric: z.enum(['concurrent_sandboxes', 'sandbox_start_rate']) });

function checkRange(start: number | undefined, end: number | undefined): void {
  if (start !== undefined && end !== undefined && start > end) throw new BadRequest('invalid query: start must not be after end');
}

/** `sandbox_ids` as the SDK sends it (`a,b`, form style without explode) or repeated. */
function sandboxIds(raw: string | string[]): string[] {
  const ids = [...new Set((Array.isArray(raw) ? raw : [raw]).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean))];
  if (ids.length === 0) throw new BadRequest('invalid query: sandbox_ids must name at least one sandbox');
  if (ids.length > MAX_METRICS_SANDBOXES) throw new BadRequest(`invalid query: sandbox_ids names more than ${MAX_METRICS_SANDBOXES} sandboxes`);
  for (const id of ids) parse(sandboxId, id, 'query: sandbox_ids');
  return ids;
}

export interface ObservabilityDeps {
  sandboxes: SandboxStore;
  clusters: ClusterStore;
  templates: TemplateService;
  grants: GrantSigner;
}

export function jwksRoute(app: FastifyInstance, grants: GrantSigner): void {
  app.get(JWKS_PATH, async (_req, reply) => {
    void reply.header('cache-control', 'public, max-age=300');
    return grants.jwks();
  });
}

export function observabilityRoutes(app: FastifyInstance, d: ObservabilityDeps): void {
  /** 307 to the same path and (normalised) query on the cluster's public port, with a grant appended. */
  const redirect = async (req: FastifyRequest, reply: FastifyReply, cluster: Cluster, subject: GrantSubject, clamped: Record<string, number | undefined>, path?: string) => {
    if (!cluster.publicUrl) throw new ClusterUnavailable(`the team's cluster '${cluster.name}' has no public URL for logs and metrics (register it with publicUrl)`);
    const url = new URL(req.url, 'http://placeholder');
    // Build routes go to the canonical path (template id, not a name), which the edge matches against the grant.
    if (path !== undefined) url.pathname = path;
    // Mounted again under a prefix (the dashboard's /dashboard/api): the cluster's path is the one without it.
    else if (app.prefix && url.pathname.startsWith(app.prefix)) url.pathname = url.pathname.slice(app.prefix.length);
    const query = new URLSearchParams(url.search);
    for (const [k, v] of Object.entries(clamped)) if (v !== undefined) query.set(k, String(v));
    query.set(GRANT_PARAM, await d.grants.sign(cluster.id, teamOf(req).id, subject));
    void reply.header('cache-control', 'no-store');
    return reply.redirect(`${cluster.publicUrl}${url.pathname}?${query.toString()}`, 307);
  };

  /** The cluster holding the team's sandbox (also an ended one), or 404. */
  const sandboxCluster = async (req: FastifyRequest, ids: string[]): Promise<Cluster> => {
    const team = teamOf(req);
    const owned = new Map((await d.sandboxes.ownedBy(team.id, ids)).map((s) => [s.id, s.clusterId]));
    const missing = ids.find((id) => !owned.has(id));
    if (missing !== undefined) throw new SandboxNotFound(missing);
    const clusterIds = new Set(owned.values());
    // Sandboxes of one answer live in one cluster (a team has one); a mix cannot be answered by one edge.
    if (clusterIds.size !== 1) throw new BadRequest('invalid query: sandbox_ids name sandboxes of different clusters');
    const cluster = await d.clusters.get([...clusterIds][0]!);
    if (!cluster) throw new SandboxNotFound(ids[0]!);
    return cluster;
  };

  app.get('/sandboxes/:sandboxID/logs', async (req, reply) => {
    const { sandboxID } = parse(SandboxParams, req.params, 'path');
    const q = parse(V1LogsQuery, req.query, 'query');
    checkRange(q.start, q.end);
    return redirect(req, reply, await sandboxCluster(req, [sandboxID]), { scope: 'sandbox.logs', sandboxIds: [sandboxID] }, { limit: q.limit });
  });

  app.get('/v2/sandboxes/:sandboxID/logs', async (req, reply) => {
    const { sandboxID } = parse(SandboxParams, req.params, 'path');
    const q = parse(V2LogsQuery, req.query, 'query');
    return redirect(req, reply, await sandboxCluster(req, [sandboxID]), { scope: 'sandbox.logs', sandboxIds: [sandboxID] }, { limit: q.limit });
  });

  app.get('/sandboxes/:sandboxID/metrics', async (req, reply) => {
    const { sandboxID } = parse(SandboxParams, req.params, 'path');
    const q = parse(MetricsQuery, req.query, 'query');
    checkRange(q.start, q.end);
    return redirect(req, reply, await sandboxCluster(req, [sandboxID]), { scope: 'sandbox.metrics', sandboxIds: [sandboxID] }, {});
  });

  app.get('/sandboxes/metrics', async (req, reply) => {
    const q = parse(ManyMetricsQuery, req.query, 'query');
    const ids = sandboxIds(q.sandbox_ids);
    return redirect(req, reply, await sandboxCluster(req, ids), { scope: 'sandbox.metrics', sandboxIds: ids }, {});
  });

  app.get('/templates/:templateID/builds/:buildID/logs', async (req, reply) => {
    const { templateID, buildID } = parse(BuildParams, req.params, 'path');
    const q = parse(BuildLogsQuery, req.query, 'query');
    const { cluster, templateId, build } = await d.templates.readableBuild(teamOf(req), templateID, buildID);
    const path = `/templates/${encodeURIComponent(templateId)}/builds/${encodeURIComponent(build.buildId)}/logs`;
    return redirect(req, reply, cluster, { scope: 'build.logs', templateId, buildId: build.buildId }, { limit: q.limit }, path);
  });

  app.get('/templates/:templateID/builds/:buildID/status', async (req, reply) => {
    const { templateID, buildID } = parse(BuildParams, req.params, 'path');
    const q = parse(BuildStatusQuery, req.query, 'query');
    const { cluster, templateId, build: found } = await d.templates.readableBuild(teamOf(req), templateID, buildID);
    // The SDK learns `ready` from the cluster; the control plane records it on the way (a state-only BuildStatus,
    // no log entries), so the tags and names the SDK uses next already resolve to the new build.
    const settled = found.status === 'building' ? await d.templates.settle(found) : found.status;
    const build = settled === found.status ? found : ((await d.templates.buildRecord(found.buildId)) ?? found);
    const path = `/templates/${encodeURIComponent(templateId)}/builds/${encodeURIComponent(build.buildId)}/status`;
    const reason = build.status === 'error' && build.reason ? { reason: { message: build.reason.message, ...(build.reason.step ? { step: build.reason.step } : {}) } } : {};
    const state = { status: build.status, ...reason };
    return redirect(req, reply, cluster, { scope: 'build.status', templateId, buildId: build.buildId, state, ...(build.nodeId ? { nodeId: build.nodeId } : {}) }, { limit: q.limit }, path);
  });

  // Team metrics from the control plane's own records: how many sandboxes ran at once, how fast they started.
  const teamWindow = (req: FastifyRequest, q: { start?: number; end?: number }) => {
    const { teamID } = parse(TeamParams, req.params, 'path');
    if (teamID !== teamOf(req).id) throw new NotFound(`team '${teamID}' not found`);
    const end = q.end ?? Math.floor(Date.now() / 1000);
    const start = q.start ?? end - 3600;
    checkRange(start, end);
    if (end - start > MAX_TEAM_WINDOW_S) throw new BadRequest(`invalid query: the window from start to end is longer than ${MAX_TEAM_WINDOW_S / 86400} days`);
    return { start, end };
  };

  app.get('/teams/:teamID/metrics', async (req) => {
    const q = parse(TeamMetricsQuery, req.query, 'query');
    const w = teamWindow(req, q);
    return (await teamSeries(d.sandboxes, teamOf(req).id, w.start, w.end)) satisfies S['TeamMetric'][];
  });

  app.get('/teams/:teamID/metrics/max', async (req) => {
    const q = parse(TeamMaxQuery, req.query, 'query');
    const w = teamWindow(req, q);
    const series = await teamSeries(d.sandboxes, teamOf(req).id, w.start, w.end);
    const pick = (m: S['TeamMetric']) => (q.metric === 'concurrent_sandboxes' ? m.concurrentSandboxes : m.sandboxStartRate);
    let best: S['TeamMetric'] | undefined;
    for (const m of series) if (!best || pick(m) > pick(best)) best = m;
    const at = best ?? { timestampUnix: w.end, timestamp: new Date(w.end * 1000).toISOString() };
    return { timestampUnix: at.timestampUnix, timestamp: at.timestamp, value: best ? pick(best) : 0 } satisfies S['MaxTeamMetric'];
  });
}

/**
 * Points over [start, end] (unix seconds), at most MAX_TEAM_POINTS, at least 5 s apart: at each point the
 * sandboxes running then, and the starts per second over the step before it.
 */
export async function teamSeries(store: SandboxStore, teamId: string, start: number, end: number): Promise<S['TeamMetric'][]> {
  const step = Math.max(5, Math.ceil((end - start) / MAX_TEAM_POINTS));
  const lives = await store.lifetimes(teamId, (start - step) * 1000, end * 1000, MAX_LIFETIMES);
  const out: S['TeamMetric'][] = [];
  for (let t = start; t <= end; t += step) {
    const at = t * 1000;
    let running = 0;
    let started = 0;
    for (const l of lives) {
      if (l.startedAt <= at && (l.endedAt === null || l.endedAt > at)) running++;
      if (l.startedAt > at - step * 1000 && l.startedAt <= at) started++;
    }
    out.push({ timestampUnix: t, timestamp: new Date(at).toISOString(), concurrentSandboxes: running, sandboxStartRate: started / step });
  }
  return out;
}
