// Sandbox lifecycle as the public API sees it: create (limits, placement, control link), kill, timeouts,
// connect, list. Throws typed errors only; the HTTP layer maps them.

import { Code } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { LinkCallError, type ControlLinks } from '../cluster/control-link.js';
import { rankNodes, type PlacementOptions } from '../cluster/placement.js';
import { BadRequest, ClusterUnavailable, NoCapacity, NotFound, NotImplemented, SandboxNotFound } from '../errors.js';
import type { Cluster, ClusterStore } from '../store/cluster-store.js';
import type { SandboxRecord, SandboxStore, ListFilter } from '../store/sandbox-store.js';
import type { Team } from '../store/team-store.js';
import type { ResolvedTemplate } from '../templates/template-service.js';
import { newAccessToken, newSandboxId } from './ids.js';

/** E2B's server default when a create omits `timeout` (e2b-infra.md §6.2). */
export const DEFAULT_CREATE_TIMEOUT_S = 15;
/** Default keep-alive for `/refreshes` without a duration, and for `/connect` without a timeout (SDK default). */
export const DEFAULT_REFRESH_S = 15;
export const DEFAULT_CONNECT_TIMEOUT_S = 300;

export interface CreateInput {
  templateID: string;
  timeout?: number;
  metadata?: Record<string, string>;
  envVars?: Record<string, string>;
  allowInternetAccess?: boolean;
  network?: {
    allowPublicTraffic?: boolean;
    allowOut?: string[];
    denyOut?: string[];
    egressProxy?: unknown;
    maskRequestHost?: string;
    httpsPorts?: number[];
    rules?: Record<string, unknown>;
  };
  autoPause?: boolean;
  autoResume?: { enabled: boolean };
  mcp?: unknown;
  iam?: unknown;
  volumeMounts?: unknown[];
}

export interface Created {
  sandbox: SandboxRecord;
  cluster: Cluster;
}

/** Resolves a create's `templateID` (id, name or `name:tag`) to the build a sandbox runs. */
export interface TemplateResolver {
  resolveForSandbox(team: Team, ref: string): Promise<ResolvedTemplate>;
}

/** Control-link codes after which another node may well succeed. */
const TRY_NEXT = new Set([Code.NotFound, Code.ResourceExhausted, Code.Unavailable, Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.AlreadyExists]);
/** Codes after which the node may have started the sandbox anyway: clean up before moving on. */
const MAYBE_STARTED = new Set([Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.Unavailable]);

export class SandboxService {
  constructor(
    private readonly sandboxes: SandboxStore,
    private readonly clusters: ClusterStore,
    private readonly links: ControlLinks,
    private readonly placement: PlacementOptions,
    private readonly log: Logger,
    private readonly templates: TemplateResolver,
  ) {}

  private checkTimeout(team: Team, seconds: number): void {
    if (seconds > team.maxTimeoutHours * 3600) {
      throw new BadRequest(`Timeout cannot be greater than ${team.maxTimeoutHours} hours`);
    }
  }

  private async teamCluster(team: Team): Promise<Cluster> {
    if (!team.clusterId) throw new NoCapacity('this team is not bound to a cluster yet');
    return this.clusters.require(team.clusterId);
  }

  /** Features the SDK can request that Cove does not enforce yet: refuse rather than silently ignore them. */
  private rejectUnsupported(input: CreateInput): void {
    const n = input.network;
    if (n && ((n.allowOut?.length ?? 0) > 0 || (n.denyOut?.length ?? 0) > 0)) throw new NotImplemented('egress filtering (network.allowOut/denyOut)');
    if (n && n.rules && Object.keys(n.rules).length > 0) throw new NotImplemented('egress transform rules (network.rules)');
    if (n && n.egressProxy) throw new NotImplemented('egress proxy (network.egressProxy)');
    if (n && n.maskRequestHost) throw new NotImplemented('network.maskRequestHost');
    if (input.autoPause) throw new NotImplemented('auto-pause (sandbox pause)');
    if (input.autoResume?.enabled) throw new NotImplemented('auto-resume (sandbox pause)');
    if (input.volumeMounts && input.volumeMounts.length > 0) throw new NotImplemented('volumes');
    if (input.iam && Object.keys(input.iam as object).length > 0) throw new NotImplemented('workload identity tokens (iam)');
  }

  async create(team: Team, input: CreateInput): Promise<Created> {
    const timeout = input.timeout ?? DEFAULT_CREATE_TIMEOUT_S;
    this.checkTimeout(team, timeout);
    this.rejectUnsupported(input);
    const cluster = await this.teamCluster(team);
    const resolved = await this.templates.resolveForSandbox(team, input.templateID);
    const template = resolved.template;

    const now = Date.now();
    const record: SandboxRecord = {
      id: newSandboxId(),
      teamId: team.id,
      clusterId: cluster.id,
      nodeId: null,
      templateId: template.templateId,
      alias: template.alias,
      buildId: resolved.buildId,
      cpuCount: resolved.cpuCount,
      memoryMb: resolved.memoryMb,
      diskMb: resolved.diskMb,
      metadata: input.metadata ?? {},
      envdVersion: resolved.envdVersion,
      envdAccessToken: newAccessToken(),
      trafficAccessToken: input.network?.allowPublicTraffic === false ? newAccessToken() : null,
      allowInternetAccess: input.allowInternetAccess ?? null,
      network: input.network ? (input.network as Record<string, unknown>) : null,
      state: 'creating',
      startedAt: now,
      endAt: now + timeout * 1000,
      endedAt: null,
      endReason: null,
    };
    await this.sandboxes.reserve(record, team.maxConcurrentSandboxes);
    const log = this.log.child({ sandboxId: record.id, teamId: team.id, clusterId: cluster.id });
    try {
      const link = this.links.for(cluster);
      const candidates = rankNodes(await link.listNodes(), record, this.placement);
      if (candidates.length === 0) throw new NoCapacity();
      let lastError: LinkCallError | undefined;
      let allExhausted = true;
      let allNotFound = true;
      for (const { nodeId } of candidates) {
        try {
          const info = await link.create(
            nodeId,
            {
              sandboxId: record.id,
              templateId: record.templateId,
              // Empty for a built-in template: the node's own (docs/template-builds.md, "Orchestrator").
              buildId: resolved.nodeBuildId,
              teamId: team.id,
              vcpu: record.cpuCount,
              memoryMb: record.memoryMb,
              diskMb: record.diskMb,
              envVars: input.envVars ?? {},
              metadata: record.metadata,
              allowInternetAccess: input.allowInternetAccess ?? true,
              envdAccessToken: record.envdAccessToken,
              startMs: record.startedAt,
              endMs: record.endAt,
            },
            record.trafficAccessToken,
          );
          record.nodeId = nodeId;
          record.envdVersion = info.envdVersion || resolved.envdVersion;
          record.state = 'running';
          await this.sandboxes.markRunning(record.id, nodeId, record.envdVersion);
          await this.clusters.recordSpawn(cluster.id, template.templateId, now);
          log.info({ nodeId, templateId: template.templateId }, 'sandbox created');
          return { sandbox: record, cluster };
        } catch (err) {
          if (!(err instanceof LinkCallError)) throw err;
          if (!TRY_NEXT.has(err.code)) throw new ClusterUnavailable('the cluster refused to create the sandbox', { cause: err });
          log.warn({ nodeId, err: err.message }, 'create failed on node, trying the next one');
          if (err.code !== Code.ResourceExhausted) allExhausted = false;
          // NotFound is an unknown template on the node, or a node the edge no longer knows: try the others.
          if (err.code !== Code.NotFound) allNotFound = false;
          lastError = err;
          if (MAYBE_STARTED.has(err.code)) {
            await link.delete(nodeId, record.id, 'create failed').catch(() => undefined);
          }
        }
      }
      if (allExhausted) throw new NoCapacity();
      if (allNotFound) throw new NotFound(`template '${input.templateID}' is not available in this cluster`);
      throw new ClusterUnavailable('no node could start the sandbox', { cause: lastError });
    } catch (err) {
      await this.sandboxes.remove(record.id);
      throw err;
    }
  }

  async get(team: Team, id: string): Promise<{ sandbox: SandboxRecord; cluster: Cluster }> {
    const sandbox = await this.sandboxes.getRunning(team.id, id);
    if (!sandbox) throw new SandboxNotFound(id);
    return { sandbox, cluster: await this.clusters.require(sandbox.clusterId) };
  }

  async list(team: Team, filter: ListFilter) {
    return this.sandboxes.listRunning(team.id, filter);
  }

  /** Deletes on the node, then records the end. NotFound from the node means it is already gone. */
  async terminate(sandbox: SandboxRecord, reason: string): Promise<void> {
    const cluster = await this.clusters.require(sandbox.clusterId);
    if (sandbox.nodeId) {
      try {
        await this.links.for(cluster).delete(sandbox.nodeId, sandbox.id, reason);
      } catch (err) {
        if (!(err instanceof LinkCallError) || err.code !== Code.NotFound) {
          throw new ClusterUnavailable('the cluster could not kill the sandbox', { cause: err });
        }
      }
    }
    await this.sandboxes.markKilled(sandbox.id, reason, Date.now());
  }

  async kill(team: Team, id: string): Promise<void> {
    const sandbox = await this.sandboxes.getRunning(team.id, id);
    if (!sandbox) throw new SandboxNotFound(id);
    await this.terminate(sandbox, 'killed');
    this.log.info({ sandboxId: id, teamId: team.id }, 'sandbox killed');
  }

  /** Pushes a new end time to the node; a node that no longer knows the sandbox means it is gone. */
  private async propagateEnd(sandbox: SandboxRecord, endMs: number): Promise<void> {
    const cluster = await this.clusters.require(sandbox.clusterId);
    if (!sandbox.nodeId) return;
    try {
      await this.links.for(cluster).update(sandbox.nodeId, sandbox.id, endMs);
    } catch (err) {
      if (err instanceof LinkCallError && err.code === Code.NotFound) {
        await this.sandboxes.markKilled(sandbox.id, 'gone on node', Date.now());
        throw new SandboxNotFound(sandbox.id);
      }
      throw new ClusterUnavailable('the cluster could not update the sandbox', { cause: err });
    }
  }

  /** `POST /sandboxes/{id}/timeout`: end = now + timeout, earlier or later. */
  async setTimeout(team: Team, id: string, seconds: number): Promise<void> {
    this.checkTimeout(team, seconds);
    const sandbox = await this.sandboxes.getRunning(team.id, id);
    if (!sandbox) throw new SandboxNotFound(id);
    const endMs = Date.now() + seconds * 1000;
    await this.propagateEnd(sandbox, endMs);
    await this.sandboxes.setEndAt(id, endMs);
  }

  /** Extend-only: the end moves to now + seconds when that is later. Returns the record as it now stands. */
  private async extend(team: Team, id: string, seconds: number, capAtMaxLength: boolean): Promise<SandboxRecord> {
    const sandbox = await this.sandboxes.getRunning(team.id, id);
    if (!sandbox) throw new SandboxNotFound(id);
    let endMs = Date.now() + seconds * 1000;
    // Keep-alives cannot stretch a sandbox past its team's maximum length (E2B does the same).
    if (capAtMaxLength) endMs = Math.min(endMs, sandbox.startedAt + team.maxTimeoutHours * 3_600_000);
    if (endMs <= sandbox.endAt) return sandbox;
    await this.propagateEnd(sandbox, endMs);
    const now = await this.sandboxes.extendEndAt(id, endMs);
    return { ...sandbox, endAt: now ?? endMs };
  }

  async refresh(team: Team, id: string, seconds: number | undefined): Promise<void> {
    await this.extend(team, id, seconds ?? DEFAULT_REFRESH_S, true);
  }

  async connect(team: Team, id: string, seconds: number | undefined): Promise<Created> {
    const timeout = seconds ?? DEFAULT_CONNECT_TIMEOUT_S;
    this.checkTimeout(team, timeout);
    const sandbox = await this.extend(team, id, timeout, false);
    return { sandbox, cluster: await this.clusters.require(sandbox.clusterId) };
  }
}
