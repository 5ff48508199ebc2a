// The admin API (`/admin/*`, `X-Admin-Token`): clusters, teams, API keys. `cove up` drives it to register the
// local cluster and mint the key the SDK uses. A new key is returned exactly once, in the create response.

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { API_KEY_RE } from '../auth/api-key.js';
import type { ControlLinks } from '../cluster/control-link.js';
import type { Config } from '../config.js';
import type { ClusterMetricsStore } from '../observability/cluster-health.js';
import { Conflict, NotFound } from '../errors.js';
import type { Cluster, ClusterStore } from '../store/cluster-store.js';
import type { SandboxStore } from '../store/sandbox-store.js';
import type { NodeDrains } from '../sandboxes/node-drain.js';
import { quotasOf, type Team, type TeamQuotas, type TeamStore } from '../store/team-store.js';
import { SlugSchema } from '../store/team-slug.js';
import { parse } from './validation.js';
import { isOutboundEndpoint } from '../cluster/outbound-link.js';

import { nodeLoadOf } from '../autoscaler/controller.js';
import type { CapacityMisses, DemandView } from '../autoscaler/demand.js';

const name = z.string().min(1).max(128);
const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:$/.test(new URL(u).protocol), 'must be an http(s) URL')
  .transform((u) => u.replace(/\/+$/, ''));
// The edge's API as the control plane dials it, or `outbound://<label>` for a cluster whose edge dials the
// control plane instead (docs/operating.md, "Outbound-only clusters").
const endpoint = z
  .string()
  .max(2048)
  .refine((u) => isOutboundEndpoint(u) ? /^outbound:\/\/[a-z0-9.-]{1,253}$/i.test(u) : httpUrl.safeParse(u).success, 'must be an http(s) URL, or outbound://<label> for an outbound-only cluster')
  .transform((u) => u.replace(/\/+$/, ''));
// The SDK builds `<port>-<id>.<domain>`: a cluster whose traffic port is not 443 (a one-machine `cove up`) names it
// here, `<name>:<port>`, and every URL the SDK derives carries it.
const domain = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:([1-9][0-9]{0,4}))?$/i, 'must be a DNS name, optionally with :<port>')
  .refine((d) => !d.includes(':') || Number(d.split(':')[1]) <= 65535, 'port must be 1-65535')
  .nullable();

/** The edge's public port as SDK clients reach it (log and metric routes redirect there); an http(s) base URL. */
const publicUrl = httpUrl.refine((u) => { const x = new URL(u); return x.search === '' && x.hash === '' && x.username === '' && x.password === ''; }, 'must not have a query, fragment or credentials').nullable();
const ClusterBody = z.object({ name, endpoint, token: z.string().min(16).max(512), sandboxDomain: domain.default(null), publicUrl: publicUrl.default(null) });
const ClusterPatch = z.object({ name: name.optional(), endpoint: endpoint.optional(), token: z.string().min(16).max(512).optional(), sandboxDomain: domain.optional(), publicUrl: publicUrl.optional() });
/** A per-team quota; null (on update) returns the team to the deployment's default. */
const quota = z.number().int().min(0).max(100_000);
const Quotas = { maxConcurrentBuilds: quota.optional(), maxTemplates: quota.optional(), maxSnapshots: quota.optional() };
const QuotaPatch = { maxConcurrentBuilds: quota.nullable().optional(), maxTemplates: quota.nullable().optional(), maxSnapshots: quota.nullable().optional() };
const TeamBody = z.object({
  ...Quotas,
  name,
  /** The team's template namespace; derived from the name when omitted. */
  slug: SlugSchema.optional(),
  clusterId: z.string().min(1).max(128).nullable().optional(),
  maxConcurrentSandboxes: z.number().int().min(1).max(100_000).optional(),
  maxTimeoutHours: z.number().int().min(1).max(24 * 365).optional(),
  apiKey: z.string().regex(API_KEY_RE, 'must be e2b_ followed by 40 lowercase hex digits').optional(),
  apiKeyName: name.optional(),
});
const TeamPatch = z.object({
  ...QuotaPatch,
  name: name.optional(),
  maxConcurrentSandboxes: z.number().int().min(1).max(100_000).optional(),
  maxTimeoutHours: z.number().int().min(1).max(24 * 365).optional(),
});
const BindBody = z.object({ clusterId: z.string().min(1).max(128).nullable() });
const KeyBody = z.object({ name: name.default('default'), key: z.string().regex(API_KEY_RE, 'must be e2b_ followed by 40 lowercase hex digits').optional() }).default({});
const ClusterParams = z.object({ clusterId: z.string().min(1).max(128) });
const NodeParams = ClusterParams.extend({ nodeId: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, 'must be a node id') });
const DrainBody = z
  .object({
    /** Move running sandboxes to other nodes with their memory (pause → resume elsewhere). */
    migrate: z.boolean().default(true),
    /** How long the drain keeps retrying sandboxes that did not move yet. */
    timeoutSeconds: z.number().int().min(1).max(24 * 3600).default(600),
  })
  .strict()
  .default({});
const TeamParams = z.object({ teamId: z.string().min(1).max(128) });
const KeyParams = TeamParams.extend({ keyId: z.string().min(1).max(128) });

/** A cluster as the admin API shows it: never the token. */
const clusterView = (c: Cluster) => ({
  id: c.id,
  name: c.name,
  endpoint: c.endpoint,
  sandboxDomain: c.sandboxDomain,
  publicUrl: c.publicUrl,
  createdAt: c.createdAt.toISOString(),
  updatedAt: c.updatedAt.toISOString(),
});

/** A team with the quotas in force (its own, else the deployment's defaults). */
const teamView = (t: Team, defaults: TeamQuotas) => ({
  id: t.id,
  name: t.name,
  slug: t.slug,
  clusterId: t.clusterId,
  maxConcurrentSandboxes: t.maxConcurrentSandboxes,
  maxTimeoutHours: t.maxTimeoutHours,
  ...quotasOf(t, defaults),
  createdAt: t.createdAt.toISOString(),
});

export interface AdminDeps {
  config: Readonly<Config>;
  teams: TeamStore;
  clusters: ClusterStore;
  sandboxes: SandboxStore;
  links: ControlLinks;
  clusterMetrics: ClusterMetricsStore;
  drains: NodeDrains;
  capacityMisses: CapacityMisses;
}

export function adminRoutes(app: FastifyInstance, d: AdminDeps): void {
  const ensureKeyFree = async (key: string | undefined) => {
    if (key && (await d.teams.teamByApiKey(key))) throw new Conflict('that API key is already registered');
  };

  app.get('/admin/clusters', async () =>
    (await d.clusters.list()).map((c) => ({
      ...clusterView(c),
      // An outbound-only cluster is reachable only while one of its edges holds a link: say how many do.
      ...(isOutboundEndpoint(c.endpoint) ? { controlLinks: d.links.outbound?.count(c.id) ?? 0 } : {}),
    })),
  );

  app.post('/admin/clusters', async (req, reply) => {
    const b = parse(ClusterBody, req.body, 'body');
    const { cluster, created } = await d.clusters.register(b);
    return reply.status(created ? 201 : 200).send(clusterView(cluster));
  });

  app.get('/admin/clusters/:clusterId', async (req) => {
    const { clusterId } = parse(ClusterParams, req.params, 'path');
    return clusterView(await d.clusters.require(clusterId));
  });

  app.patch('/admin/clusters/:clusterId', async (req) => {
    const { clusterId } = parse(ClusterParams, req.params, 'path');
    const b = parse(ClusterPatch, req.body, 'body');
    return clusterView(await d.clusters.update(clusterId, b));
  });

  /** Health from the cluster's latest anonymized metrics report, with alerts (COVE_ALERT_* thresholds). */
  app.get('/admin/clusters/:clusterId/health', async (req) => {
    const { clusterId } = parse(ClusterParams, req.params, 'path');
    await d.clusters.require(clusterId);
    return d.clusterMetrics.health(clusterId, d.config.alerts);
  });

  /** The cluster's nodes as its edge reports them (status, capacity, usage). */
  app.get('/admin/clusters/:clusterId/nodes', async (req) => {
    const { clusterId } = parse(ClusterParams, req.params, 'path');
    const nodes = await d.links.for(await d.clusters.require(clusterId)).listNodes();
    return nodes.map((n) => ({
      nodeId: n.nodeId,
      status: n.edgeStatus,
      sandboxCount: n.info?.sandboxCount ?? null,
      cpuCount: n.info?.capacity?.cpuCount ?? null,
      memoryBytes: n.info?.capacity ? Number(n.info.capacity.memoryBytes) : null,
      cpuAllocated: n.info?.usage?.cpuAllocated ?? null,
      memoryAllocatedBytes: n.info?.usage ? Number(n.info.usage.memoryAllocatedBytes) : null,
      // The node as the autoscaler's policy sees it (what `cove up --autoscale` decides from).
      load: nodeLoadOf(n),
    }));
  });

  /**
   * The cluster's demand that its nodes' load does not show: creates refused for lack of capacity in the recent
   * window (what an autoscaler adds to the nodes above; autoscaler/demand.ts).
   */
  app.get('/admin/clusters/:clusterId/demand', async (req): Promise<DemandView> => {
    const { clusterId } = parse(ClusterParams, req.params, 'path');
    await d.clusters.require(clusterId);
    return d.capacityMisses.view(clusterId);
  });

  /**
   * Drains a node: no new sandboxes there; with `migrate` (the default) its running sandboxes move to other nodes
   * keeping memory, processes and files. 202 with the drain's progress (200 when that node's drain already runs);
   * poll the GET until `status` is `done`, then `empty` says whether the node can leave.
   */
  app.post('/admin/clusters/:clusterId/nodes/:nodeId/drain', async (req, reply) => {
    const { clusterId, nodeId } = parse(NodeParams, req.params, 'path');
    const b = parse(DrainBody, req.body ?? {}, 'body');
    const cluster = await d.clusters.require(clusterId);
    const { view, started } = await d.drains.start(cluster, nodeId, { migrate: b.migrate, timeoutMs: b.timeoutSeconds * 1000 });
    return reply.status(started ? 202 : 200).send(view);
  });

  app.get('/admin/clusters/:clusterId/nodes/:nodeId/drain', async (req) => {
    const { clusterId, nodeId } = parse(NodeParams, req.params, 'path');
    await d.clusters.require(clusterId);
    const view = d.drains.get(clusterId, nodeId);
    if (!view) throw new NotFound(`no drain of node "${nodeId}" ran since the control plane started`);
    return view;
  });

  /** Returns a drained node to service (409 while its drain runs). */
  app.post('/admin/clusters/:clusterId/nodes/:nodeId/undrain', async (req) => {
    const { clusterId, nodeId } = parse(NodeParams, req.params, 'path');
    await d.drains.undrain(await d.clusters.require(clusterId), nodeId);
    return { nodeId, status: 'healthy' };
  });

  app.get('/admin/templates/:clusterId', async (req) => {
    const { clusterId } = parse(ClusterParams, req.params, 'path');
    await d.clusters.require(clusterId);
    return d.clusters.listTemplates(clusterId);
  });

  app.get('/admin/teams', async () =>
    Promise.all(
      (await d.teams.list()).map(async (t) => ({ ...teamView(t, d.config.defaultLimits), liveSandboxes: await d.sandboxes.countLive(t.id) })),
    ),
  );

  app.post('/admin/teams', async (req, reply) => {
    const b = parse(TeamBody, req.body, 'body');
    if (b.clusterId) await d.clusters.require(b.clusterId);
    await ensureKeyFree(b.apiKey);
    const team = await d.teams.create({
      name: b.name,
      slug: b.slug,
      clusterId: b.clusterId ?? null,
      maxConcurrentSandboxes: b.maxConcurrentSandboxes ?? d.config.defaultLimits.maxConcurrentSandboxes,
      maxTimeoutHours: b.maxTimeoutHours ?? d.config.defaultLimits.maxTimeoutHours,
      maxConcurrentBuilds: b.maxConcurrentBuilds,
      maxTemplates: b.maxTemplates,
      maxSnapshots: b.maxSnapshots,
    });
    const key = await d.teams.createApiKey(team.id, b.apiKeyName ?? 'default', b.apiKey);
    return reply.status(201).send({ team: teamView(team, d.config.defaultLimits), apiKey: key });
  });

  app.get('/admin/teams/:teamId', async (req) => {
    const { teamId } = parse(TeamParams, req.params, 'path');
    const team = await d.teams.require(teamId);
    return { ...teamView(team, d.config.defaultLimits), liveSandboxes: await d.sandboxes.countLive(teamId), apiKeys: await d.teams.listApiKeys(teamId) };
  });

  app.patch('/admin/teams/:teamId', async (req) => {
    const { teamId } = parse(TeamParams, req.params, 'path');
    const b = parse(TeamPatch, req.body, 'body');
    await d.teams.require(teamId);
    return teamView(await d.teams.update(teamId, b), d.config.defaultLimits);
  });

  app.put('/admin/teams/:teamId/cluster', async (req) => {
    const { teamId } = parse(TeamParams, req.params, 'path');
    const { clusterId } = parse(BindBody, req.body, 'body');
    await d.teams.require(teamId);
    if (clusterId) await d.clusters.require(clusterId);
    return teamView(await d.teams.update(teamId, { clusterId }), d.config.defaultLimits);
  });

  app.get('/admin/teams/:teamId/api-keys', async (req) => {
    const { teamId } = parse(TeamParams, req.params, 'path');
    await d.teams.require(teamId);
    return d.teams.listApiKeys(teamId);
  });

  app.post('/admin/teams/:teamId/api-keys', async (req, reply) => {
    const { teamId } = parse(TeamParams, req.params, 'path');
    const b = parse(KeyBody, req.body ?? {}, 'body');
    await ensureKeyFree(b.key);
    return reply.status(201).send(await d.teams.createApiKey(teamId, b.name, b.key));
  });

  app.post('/admin/teams/:teamId/api-keys/:keyId/rotate', async (req, reply) => {
    const { teamId, keyId } = parse(KeyParams, req.params, 'path');
    return reply.status(201).send(await d.teams.rotateApiKey(teamId, keyId));
  });

  app.delete('/admin/teams/:teamId/api-keys/:keyId', async (req, reply) => {
    const { teamId, keyId } = parse(KeyParams, req.params, 'path');
    await d.teams.deleteApiKey(teamId, keyId);
    return reply.status(204).send();
  });
}
