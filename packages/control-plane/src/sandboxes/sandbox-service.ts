// Sandbox lifecycle as the public API sees it: create (limits, placement, control link; also from a persistent
// snapshot), kill, timeouts, connect (which resumes a paused sandbox), pause, list, and the edge's auto-resume.
// Work on one sandbox is serialised (SandboxOps) and waits out other processes' transitions. Throws typed errors
// only; the HTTP layer maps them.

import type { VolumeRecord, VolumeStore } from '../store/volume-store.js';
import { MAX_VOLUME_MOUNTS, SandboxHasVolumes, VolumeInUse, VolumeNotFound, volumePathProblem } from '../volumes/volume-service.js';
import { tokensEqual } from '@cove/auth-tokens';
import { Code } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { LinkCallError, type ControlLinks } from '../cluster/control-link.js';
import { placeOn, preferWarm, type PlacementOptions } from '../cluster/placement.js';
import { BadRequest, ClusterUnavailable, Conflict, Forbidden, NoCapacity, NotFound, NotImplemented, OperationFailed, SandboxNotFound } from '../errors.js';
import type { Cluster, ClusterStore } from '../store/cluster-store.js';
import type { ListFilter, SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { SnapshotRecord, SnapshotStore } from '../store/snapshot-store.js';
import type { Team, TeamStore } from '../store/team-store.js';
import type { ResolvedTemplate } from '../templates/template-service.js';
import { DEFAULT_TAG, ownName, splitRef } from '../templates/names.js';
import { newAccessToken, newSandboxId } from './ids.js';
import { preferNode, startOnNodes } from './node-start.js';
import { Forks } from './fork.js';
import { PauseResume } from './pause-resume.js';
import { SandboxOps } from './sandbox-ops.js';
import type { SnapshotCleaner } from './snapshot-cleaner.js';
import { nodeEndMs } from './node-end.js';
import { nodeNetworkOf, type EgressInput } from './network.js';
import { ENVD_PORT } from '@cove/contracts/sandbox';
import type { CapacityMisses } from '../autoscaler/demand.js';

/** E2B's server default when a create omits `timeout` (e2b-infra.md §6.2). */
export const DEFAULT_CREATE_TIMEOUT_S = 15;
/** Default keep-alive for `/refreshes` without a duration, and for `/connect` without a timeout (SDK default). */
export const DEFAULT_REFRESH_S = 15;
export const DEFAULT_CONNECT_TIMEOUT_S = 300;
/** The deprecated `/resume`'s default (E2B's ResumedSandbox.timeout). */
export const DEFAULT_RESUME_TIMEOUT_S = 15;
/** A sandbox woken by traffic runs this long (E2B's defaultProxyAutoResumeTimeout), capped by the team maximum. */
export const AUTO_RESUME_TIMEOUT_S = 300;
/** An edge waits about a minute for an auto-resume: answer 409 before that rather than leave it to time out. */
export const AUTO_RESUME_WAIT_MS = 45_000;
/** envd's port: traffic to it needs no traffic token (envd checks its own access token). */

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
  autoPauseMemory?: boolean;
  autoResume?: { enabled: boolean };
  mcp?: unknown;
  iam?: unknown;
  volumeMounts?: Array<{ name: string; path: string }>;
}

export interface Created {
  sandbox: SandboxRecord;
  cluster: Cluster;
}

export interface Connected extends Created {
  /** True when the sandbox was paused and this call resumed it (201), false when it was running (200). */
  resumed: boolean;
}

/** Resolves a create's `templateID` (id, name or `name:tag`) to the build a sandbox runs. */
export interface TemplateResolver {
  /** `cluster` is the team's (the caller has just read it). */
  resolveForSandbox(team: Team, ref: string, cluster: Cluster): Promise<ResolvedTemplate>;
}

export interface SandboxServiceDeps {
  sandboxes: SandboxStore;
  snapshots: SnapshotStore;
  clusters: ClusterStore;
  teams: TeamStore;
  links: ControlLinks;
  cleaner: SnapshotCleaner;
  placement: PlacementOptions;
  log: Logger;
  templates: TemplateResolver;
  /** How long a call waits for another operation on the same sandbox to settle before answering 409. */
  transitionWaitMs: number;
  /** Team volumes (docs/volumes.md); without it, volumeMounts are refused (501). */
  volumes?: VolumeStore;
  /** Creates refused for lack of capacity, the autoscaler's demand signal (autoscaler/demand.ts). */
  capacityMisses?: CapacityMisses;
}

/** What a new sandbox starts from: a template's build, or a persistent snapshot of one. */
interface Origin {
  templateId: string;
  alias: string | null;
  buildId: string;
  nodeBuildId: string;
  cpuCount: number;
  memoryMb: number;
  diskMb: number;
  envdVersion: string;
  snapshot?: SnapshotRecord;
}

const WAIT = Symbol('wait');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class SandboxService {
  readonly ops = new SandboxOps();
  readonly pauses: PauseResume;
  /** `POST /sandboxes/{id}/fork` (fork.ts). */
  readonly forks: Forks;
  private readonly pending = new Set<Promise<unknown>>();

  constructor(private readonly d: SandboxServiceDeps) {
    this.pauses = new PauseResume(d.sandboxes, d.clusters, d.links, d.cleaner, d.placement, d.log, (work) => this.background(work));
    this.forks = new Forks({ ...d, service: this });
  }

  private get sandboxes() {
    return this.d.sandboxes;
  }

  /** Runs `work` after the answer; failures are logged, `drain` waits for it. */
  background(work: Promise<unknown>): void {
    const p = work.catch((err: unknown) => this.d.log.warn({ err }, 'background work failed')).finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  /** Waits for background work (snapshot deletions after resumes) and operations in flight; for shutdown and tests. */
  async drain(): Promise<void> {
    await this.ops.idle();
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  private checkTimeout(team: Team, seconds: number): void {
    if (seconds > team.maxTimeoutHours * 3600) {
      throw new BadRequest(`Timeout cannot be greater than ${team.maxTimeoutHours} hours`);
    }
  }

  /** Features the SDK can request that Cove does not enforce yet: refuse rather than silently ignore them. */
  private rejectUnsupported(input: CreateInput): void {
    if (input.volumeMounts && input.volumeMounts.length > 0 && !this.d.volumes) throw new NotImplemented('volumes');
    if (input.iam && Object.keys(input.iam as object).length > 0) throw new NotImplemented('workload identity tokens (iam)');
    // The SDK would start E2B's `mcp-gateway` binary inside the sandbox, which Cove's templates do not carry.
    if (input.mcp && Object.keys(input.mcp as object).length > 0) throw new NotImplemented('the MCP gateway (mcp)');
  }

  /** E2B's lifecycle rules: a filesystem-only auto-pause needs autoPause and cannot be woken by traffic. */
  private checkLifecycle(input: CreateInput): void {
    if (input.autoPauseMemory === false && !input.autoPause) throw new BadRequest('autoPauseMemory can only be set when autoPause is true');
    if (input.autoPauseMemory === false && input.autoResume?.enabled) {
      throw new BadRequest('autoResume cannot be combined with autoPauseMemory=false: a filesystem-only snapshot cannot be resumed by traffic');
    }
  }

  /**
   * A persistent snapshot of the team that `ref` names (its id, or its name, optionally `:default`): the newest
   * of that name. Checked before templates, so a team's snapshot shadows a same-named template for that team only.
   */
  private async findSnapshot(team: Team, cluster: Cluster, ref: string): Promise<SnapshotRecord | undefined> {
    const { name: qualified, tag } = splitRef(ref);
    if (tag !== undefined && tag !== DEFAULT_TAG) return undefined;
    // Snapshots are never public: only the team's own namespace can name one.
    const name = ownName(qualified, team.slug);
    if (name === undefined) return undefined;
    return (await this.d.snapshots.findPersistent(team.id, cluster.id, name))[0];
  }

  private async origin(team: Team, cluster: Cluster, ref: string): Promise<Origin> {
    const snapshot = await this.findSnapshot(team, cluster, ref);
    if (snapshot) return { ...snapshot, snapshot };
    const r = await this.d.templates.resolveForSandbox(team, ref, cluster);
    return { ...r, templateId: r.template.templateId, alias: r.template.alias };
  }

  async create(team: Team, input: CreateInput): Promise<Created> {
    const timeout = input.timeout ?? DEFAULT_CREATE_TIMEOUT_S;
    this.checkTimeout(team, timeout);
    this.rejectUnsupported(input);
    this.checkLifecycle(input);
    const net = nodeNetworkOf(input.allowInternetAccess, input.network);
    const cluster = await this.d.clusters.forTeam(team);
    const origin = await this.origin(team, cluster, input.templateID);

    const now = Date.now();
    const record: SandboxRecord = {
      id: newSandboxId(),
      teamId: team.id,
      clusterId: cluster.id,
      nodeId: null,
      templateId: origin.templateId,
      alias: origin.alias,
      buildId: origin.buildId,
      nodeBuildId: origin.nodeBuildId,
      cpuCount: origin.cpuCount,
      memoryMb: origin.memoryMb,
      diskMb: origin.diskMb,
      metadata: input.metadata ?? {},
      envdVersion: origin.envdVersion,
      envdAccessToken: newAccessToken(),
      trafficAccessToken: input.network?.allowPublicTraffic === false ? newAccessToken() : null,
      allowInternetAccess: input.allowInternetAccess ?? null,
      network: input.network ? (input.network as Record<string, unknown>) : null,
      state: 'creating',
      startedAt: now,
      endAt: now + timeout * 1000,
      endedAt: null,
      endReason: null,
      autoPause: input.autoPause ?? false,
      autoPauseMemory: input.autoPauseMemory ?? true,
      autoResume: input.autoResume?.enabled ?? false,
      pauseSnapshotId: null,
      pauseMemory: null,
      stateChangedAt: null,
    };
    const volumes = await this.volumesOf(team, cluster, input, origin);
    await this.sandboxes.reserve(record, team.maxConcurrentSandboxes);
    const log = this.d.log.child({ sandboxId: record.id, teamId: team.id, clusterId: cluster.id });
    try {
      await this.attachVolumes(record.id, volumes);
      const link = this.d.links.for(cluster);
      // A built-in template (empty node build id) only on nodes that have it ready (code-interpreter-v1 is built
      // in the background after a node starts).
      const builtIn = origin.nodeBuildId === '' && !origin.snapshot ? { templateId: record.templateId, ref: input.templateID } : undefined;
      // Where a warm slot of it is left, first: a burst past one node's pool claims on another instead of booting.
      let picked: string | undefined;
      const candidates = await link.placementCandidates((nodes) => {
        const ranked = placeOn(nodes, record, this.d.placement, builtIn);
        if (!builtIn) return ranked;
        const ordered = preferWarm(ranked, nodes, builtIn.templateId, (nodeId) => link.placedRecently(nodeId, builtIn.templateId));
        picked = ordered[0]!.nodeId;
        link.recordPlacement(picked, builtIn.templateId);
        return ordered;
      });
      const snapshotId = origin.snapshot?.id;
      const { nodeId, info } = await startOnNodes(
        link,
        // A persistent snapshot's node may still hold it in its cache.
        preferNode(candidates, origin.snapshot?.nodeId ?? null),
        {
          sandboxId: record.id,
          templateId: record.templateId,
          // Empty for a built-in template: the node's own (docs/template-builds.md, "Orchestrator").
          buildId: origin.nodeBuildId,
          teamId: team.id,
          vcpu: record.cpuCount,
          memoryMb: record.memoryMb,
          diskMb: record.diskMb,
          envVars: input.envVars ?? {},
          metadata: record.metadata,
          allowInternetAccess: net.allowInternetAccess,
          egress: net.egress,
          maskRequestHost: net.maskRequestHost,
          envdAccessToken: record.envdAccessToken,
          startMs: record.startedAt,
          endMs: nodeEndMs(record, record.endAt),
          ...(snapshotId ? { snapshotId } : {}),
          ...(volumes.length > 0 ? { volumeMounts: volumes.map((v) => ({ volumeId: v.volume.id, path: v.path, quotaBytes: BigInt(v.volume.quotaBytes) })) } : {}),
        },
        record.trafficAccessToken,
        { describe: snapshotId ? `cannot start a sandbox from snapshot '${snapshotId}'` : `template '${input.templateID}'`, templateRef: input.templateID },
        log,
      ).catch((err: unknown) => {
        if (builtIn && picked) link.placementLanded(picked, null, builtIn.templateId);
        throw err;
      });
      if (builtIn && picked) link.placementLanded(picked, nodeId, builtIn.templateId);
      record.nodeId = nodeId;
      record.envdVersion = info.envdVersion || origin.envdVersion;
      record.state = 'running';
      // A start from a snapshot is not a spawn of its template.
      await this.sandboxes.markRunning(record.id, nodeId, record.envdVersion, snapshotId ? undefined : { clusterId: cluster.id, templateId: origin.templateId, at: now });
      log.info({ nodeId, templateId: origin.templateId, snapshotId }, 'sandbox created');
      return { sandbox: record, cluster };
    } catch (err) {
      if (err instanceof NoCapacity) this.d.capacityMisses?.record(cluster.id);
      await this.d.volumes?.release(record.id);
      await this.sandboxes.remove(record.id);
      throw err;
    }
  }

  /**
   * 409 sandbox_has_volumes: a checkpoint (pause, fork, a drain's move) would carry open files of a volume that
   * is attached to this sandbox alone; docs/volumes.md.
   */
  async refuseWithVolumes(sandboxId: string, what: string): Promise<void> {
    if (this.d.volumes && (await this.d.volumes.hasAttachments(sandboxId))) throw new SandboxHasVolumes(sandboxId, what);
  }

  /**
   * The create's volume mounts, resolved by name in the team's own volumes (another team's name is unknown: 404).
   * A volume is attached to one running sandbox at a time and its memory cannot be checkpointed with it, so
   * volumes do not combine with auto-pause or a start from a snapshot.
   */
  private async volumesOf(team: Team, cluster: Cluster, input: CreateInput, origin: Origin): Promise<Array<{ volume: VolumeRecord; path: string }>> {
    const mounts = input.volumeMounts ?? [];
    if (mounts.length === 0 || !this.d.volumes) return [];
    if (input.autoPause) throw new BadRequest('volumeMounts cannot be combined with autoPause: a sandbox with volumes cannot be paused');
    if (origin.snapshot) throw new BadRequest('volumeMounts cannot be used when starting from a snapshot');
    if (mounts.length > MAX_VOLUME_MOUNTS) throw new BadRequest(`at most ${MAX_VOLUME_MOUNTS} volumeMounts`);
    const out: Array<{ volume: VolumeRecord; path: string }> = [];
    for (const [i, m] of mounts.entries()) {
      const problem = volumePathProblem(m.path);
      if (problem) throw new BadRequest(`volumeMounts[${i}].path: ${problem}`);
      const volume = await this.d.volumes.byName(team.id, m.name);
      if (!volume || volume.clusterId !== cluster.id) throw new VolumeNotFound(m.name);
      if (out.some((o) => o.volume.id === volume.id)) throw new BadRequest(`volumeMounts[${i}]: volume "${m.name}" is mounted twice`);
      if (out.some((o) => o.path === m.path || o.path.startsWith(`${m.path}/`) || m.path.startsWith(`${o.path}/`))) {
        throw new BadRequest(`volumeMounts[${i}].path: overlaps another mount`);
      }
      out.push({ volume, path: m.path });
    }
    return out;
  }

  /** Attaches each volume to the new sandbox; 409 volume_in_use when a running sandbox holds one. */
  private async attachVolumes(sandboxId: string, volumes: Array<{ volume: VolumeRecord; path: string }>): Promise<void> {
    for (const { volume, path } of volumes) {
      const holder = await this.d.volumes!.attach(volume.id, sandboxId, path);
      if (holder !== undefined) throw new VolumeInUse(volume.name, holder);
    }
  }

  /**
   * Runs `act` on the sandbox as it stands once no transition is under way: serialised with this process's
   * other operations on it, and polling the row while another process (or an interrupted one, which the
   * reconciler settles) holds it `pausing`/`resuming`. `act` gets undefined for unknown, killed, starting, expired
   * and other teams' sandboxes (`teamId` undefined: any team). 409 when it does not settle in time.
   */
  async whenSettled<T>(id: string, teamId: string | undefined, act: (s: SandboxRecord | undefined) => Promise<T>, waitMs = this.d.transitionWaitMs): Promise<T> {
    const deadline = Date.now() + waitMs;
    let state = '';
    for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
      const r = await this.ops.exclusive(id, deadline, async () => {
        const s = await this.sandboxes.getVisible(teamId, id);
        if (s && (s.state === 'pausing' || s.state === 'resuming')) {
          state = s.state;
          return WAIT;
        }
        return { value: await act(s) };
      });
      if (r !== WAIT) return r.value;
      if (Date.now() + delay > deadline) throw new Conflict(`sandbox "${id}" is still ${state}; try again`);
      await sleep(delay);
    }
  }

  /** The sandbox's volume mounts (getInfo's `volumeMounts`). */
  async volumeMountsOf(sandboxId: string): Promise<Array<{ name: string; path: string }>> {
    return this.d.volumes ? this.d.volumes.mountsOf(sandboxId) : [];
  }

  async get(team: Team, id: string): Promise<{ sandbox: SandboxRecord; cluster: Cluster }> {
    const sandbox = await this.sandboxes.getVisible(team.id, id);
    if (!sandbox) throw new SandboxNotFound(id);
    return { sandbox, cluster: await this.d.clusters.require(sandbox.clusterId) };
  }

  async list(team: Team, filter: ListFilter) {
    return this.sandboxes.list(team.id, filter);
  }

  /** Deletes a running sandbox on its node, then records the end. NotFound from the node means it is already gone. */
  async terminate(sandbox: SandboxRecord, reason: string): Promise<void> {
    const cluster = await this.d.clusters.require(sandbox.clusterId);
    if (sandbox.nodeId) {
      try {
        await this.d.links.for(cluster).delete(sandbox.nodeId, sandbox.id, reason);
      } catch (err) {
        if (!(err instanceof LinkCallError) || err.code !== Code.NotFound) {
          throw new ClusterUnavailable('the cluster could not kill the sandbox', { cause: err });
        }
      }
    }
    await this.sandboxes.markKilled(sandbox.id, reason, Date.now());
  }

  /** Kills a running sandbox on its node, or a paused one by deleting its snapshot. */
  async kill(team: Team, id: string): Promise<void> {
    await this.whenSettled(id, team.id, async (s) => {
      if (!s) throw new SandboxNotFound(id);
      if (s.state === 'paused') await this.pauses.killPaused(s, 'killed');
      else await this.terminate(s, 'killed');
    });
    this.d.log.info({ sandboxId: id, teamId: team.id }, 'sandbox killed');
  }

  /**
   * E2B's `PUT /sandboxes/{id}/network`: replaces the sandbox's egress (omitted fields clear; the ingress fields of
   * its network config stay). A running sandbox's node applies it first, so on any failure (a bad policy is a 400
   * before anything is sent) the sandbox keeps its previous policy, on the node and in the row. A paused sandbox
   * gets it in its row, and so on resume.
   */
  async updateNetwork(team: Team, id: string, body: EgressInput & { allowInternetAccess?: boolean }): Promise<void> {
    const net = nodeNetworkOf(body.allowInternetAccess, body);
    await this.whenSettled(id, team.id, async (s) => {
      if (!s || (s.state !== 'running' && s.state !== 'paused')) throw new SandboxNotFound(id);
      if (s.state === 'running' && s.nodeId) {
        const cluster = await this.d.clusters.require(s.clusterId);
        try {
          await this.d.links.for(cluster).updateNetwork(s.nodeId, s.id, net);
        } catch (err) {
          if (err instanceof LinkCallError && err.code === Code.NotFound) throw new SandboxNotFound(id);
          throw new ClusterUnavailable('the cluster could not update the sandbox\'s network', { cause: err });
        }
      }
      const { allowOut: _a, denyOut: _d, rules: _r, egressProxy: _e, ...ingress } = s.network ?? {};
      const network = {
        ...ingress,
        ...(body.allowOut !== undefined ? { allowOut: body.allowOut } : {}),
        ...(body.denyOut !== undefined ? { denyOut: body.denyOut } : {}),
        // Kept so a resume (on any node) gets them back with the rest of the policy.
        ...(body.rules !== undefined ? { rules: body.rules } : {}),
        ...(body.egressProxy !== undefined && body.egressProxy !== null ? { egressProxy: body.egressProxy } : {}),
      };
      await this.sandboxes.setNetwork(s.id, body.allowInternetAccess ?? null, Object.keys(network).length ? network : null);
    });
    this.d.log.info({ sandboxId: id, teamId: team.id, allowOut: net.egress.allowOut.length, denyOut: net.egress.denyOut.length }, 'sandbox network updated');
  }

  /** Pushes a new end time to the node; a node that no longer knows the sandbox means it is gone. */
  private async propagateEnd(sandbox: SandboxRecord, endMs: number): Promise<void> {
    const cluster = await this.d.clusters.require(sandbox.clusterId);
    if (!sandbox.nodeId) return;
    try {
      await this.d.links.for(cluster).update(sandbox.nodeId, sandbox.id, nodeEndMs(sandbox, endMs));
    } catch (err) {
      if (err instanceof LinkCallError && err.code === Code.NotFound) {
        await this.sandboxes.markKilled(sandbox.id, 'gone on node', Date.now());
        throw new SandboxNotFound(sandbox.id);
      }
      throw new ClusterUnavailable('the cluster could not update the sandbox', { cause: err });
    }
  }

  /** `POST /sandboxes/{id}/timeout`: end = now + timeout, earlier or later. Only running sandboxes (as E2B). */
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

  /**
   * `connect` (and the deprecated `resume`): a running sandbox only has its end extended; a paused one is resumed
   * with end = now + timeout (`memory: false` boots it from its filesystem only). Of concurrent calls on a paused
   * sandbox one resumes it and the others then find it running.
   */
  async connect(team: Team, id: string, opts: { timeout?: number; memory?: boolean; defaultTimeout?: number }): Promise<Connected> {
    const seconds = opts.timeout ?? opts.defaultTimeout ?? DEFAULT_CONNECT_TIMEOUT_S;
    this.checkTimeout(team, seconds);
    return this.whenSettled(id, team.id, async (s) => {
      if (!s) throw new SandboxNotFound(id);
      const cluster = await this.d.clusters.require(s.clusterId);
      if (s.state === 'running') return { sandbox: await this.extend(team, id, seconds, false), cluster, resumed: false };
      return { sandbox: await this.pauses.resume(team, s, seconds, opts.memory === false), cluster, resumed: true };
    });
  }

  /** `POST /sandboxes/{id}/pause`: 409 when it is already paused (or pausing). */
  async pause(team: Team, id: string, memory: boolean): Promise<void> {
    await this.whenSettled(id, team.id, async (s) => {
      if (!s) throw new SandboxNotFound(id);
      if (s.state === 'paused') throw new Conflict(`sandbox "${id}" is already paused`);
      await this.refuseWithVolumes(s.id, 'paused');
      await this.pauses.pause(s, memory);
    });
  }

  /**
   * The evictor's action at a sandbox's end time: pause it when it was created with autoPause (falling back to a
   * filesystem-only pause, then a kill, when the node cannot checkpoint it), kill it otherwise. Returns what happened.
   */
  async expire(id: string, now: number): Promise<'killed' | 'paused' | 'skipped'> {
    return this.ops.exclusive(id, Date.now() + this.d.transitionWaitMs, async () => {
      const cur = await this.sandboxes.get(id);
      if (!cur || cur.state !== 'running' || cur.endAt > now) return 'skipped';
      if (!cur.autoPause) {
        await this.terminate(cur, 'timeout');
        return 'killed';
      }
      try {
        await this.pauses.pause(cur, cur.autoPauseMemory);
        return 'paused';
      } catch (err) {
        if (!(err instanceof OperationFailed)) throw err;
        this.d.log.warn({ sandboxId: id, err: err.message }, 'auto-pause refused');
      }
      if (cur.autoPauseMemory) {
        try {
          await this.pauses.pause(cur, false);
          return 'paused';
        } catch (err) {
          if (!(err instanceof OperationFailed)) throw err;
        }
      }
      await this.terminate(cur, 'timeout (the sandbox could not be paused)');
      return 'killed';
    });
  }

  /**
   * The edge's `POST /cluster/v1/sandboxes/{id}/resume` when traffic arrives for a sandbox it does not route: a
   * running sandbox of `cluster` answers at once; a paused one created with autoResume (and paused with memory) is
   * resumed for AUTO_RESUME_TIMEOUT_S. A private sandbox needs its traffic token; through envd's port, as E2B has
   * it, envd's access token does instead (a sandbox's id alone never wakes it).
   */
  async autoResume(
    cluster: Cluster,
    id: string,
    req: { port: number; trafficAccessToken?: string; envdAccessToken?: string },
  ): Promise<{ sandboxID: string; nodeID: string }> {
    return this.whenSettled(id, undefined, async (s) => {
      if (!s || s.clusterId !== cluster.id) throw new SandboxNotFound(id);
      const token = s.trafficAccessToken;
      const given = (t: string | undefined, want: string | null): boolean => !!want && t !== undefined && tokensEqual(t, want);
      const allowed = !token || given(req.trafficAccessToken, token) || (req.port === ENVD_PORT && given(req.envdAccessToken, s.envdAccessToken));
      if (!allowed) {
        throw new Forbidden(
          req.port === ENVD_PORT
            ? `sandbox "${id}" is private: its envd access token (X-Access-Token) or traffic access token is required`
            : `sandbox "${id}" is private: a valid traffic access token is required`,
        );
      }
      if (s.state === 'running') return { sandboxID: s.id, nodeID: s.nodeId! };
      if (!s.autoResume) throw new NotFound(`sandbox "${id}" is paused and does not resume on traffic`);
      if (s.pauseMemory === false) throw new NotFound(`sandbox "${id}" was paused without memory and resumes only through connect`);
      const team = await this.d.teams.require(s.teamId);
      const r = await this.pauses.resume(team, s, Math.min(AUTO_RESUME_TIMEOUT_S, team.maxTimeoutHours * 3600), false);
      return { sandboxID: r.id, nodeID: r.nodeId! };
    }, Math.min(this.d.transitionWaitMs, AUTO_RESUME_WAIT_MS));
  }
}
