// E2B's fork (`POST /sandboxes/{id}/fork`, docs/pause-resume.md "Fork"): N running copies of a running sandbox —
// memory, processes, files — each a new sandbox with its own id, hostname, address, envd token and traffic token.
// It is the persistent snapshot's checkpoint (dump, restore in place: the original runs on, its established
// connections closed) under a short-lived `fork` snapshot, then N starts from it as `Sandbox.create(<snapshot>)`
// starts one: on the origin node from its own files; on any other node from cluster storage's copy, verified against
// the signed manifest before a byte is restored. When every copy is placed on the origin first, the origin defers the
// commit until a copy has to move elsewhere (usually never). The snapshot is deleted once every copy has started.
// Throws typed errors only; per-copy failures are entries of the answer.

import { Code } from '@connectrpc/connect';
import { SnapshotCommit } from '@cove/contracts/orchestrator';
import type { Logger } from 'pino';
import { LinkCallError, type ControlLinks } from '../cluster/control-link.js';
import { placeOn, type PlacementOptions } from '../cluster/placement.js';
import { BadRequest, ClusterUnavailable, Conflict, CoveError, e2bErrorCode, httpStatus, OperationFailed, SandboxNotFound } from '../errors.js';
import type { components } from '../gen/public-api.js';
import type { Cluster, ClusterStore } from '../store/cluster-store.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { SnapshotRecord, SnapshotStore } from '../store/snapshot-store.js';
import type { Team } from '../store/team-store.js';
import { newAccessToken, newSandboxId, newSnapshotId } from './ids.js';
import { nodeNetworkOf } from './network.js';
import { MAYBE_DONE, startOnNodes } from './node-start.js';
import { nodeEndMs } from './node-end.js';
import { snapshotOf, takenOf } from './pause-resume.js';
import type { SandboxService } from './sandbox-service.js';
import type { SnapshotCleaner } from './snapshot-cleaner.js';

/** E2B's fork default when `count` is omitted. */
export const DEFAULT_FORK_COUNT = 1;
/**
 * The most copies one fork asks for. E2B allows 100; a Cove node restores each copy with CRIU on the node's own
 * cores, so 20 keeps one call's work bounded (the team's concurrency limit still applies on top).
 */
export const MAX_FORK_COUNT = 20;
/** E2B's fork default `timeout` (seconds) for each copy. */
export const DEFAULT_FORK_TIMEOUT_S = 15;
/** Copies started at once: each is a restore (CPU and disk bound); more at a time only queue on the nodes. */
const START_PARALLELISM = 3;

/** One entry of the answer: a started copy, or why it did not start (E2B's `Error`). */
export type ForkOutcome = { sandbox: SandboxRecord } | { error: components['schemas']['Error'] };

export interface ForkDeps {
  sandboxes: SandboxStore;
  snapshots: SnapshotStore;
  clusters: ClusterStore;
  links: ControlLinks;
  cleaner: SnapshotCleaner;
  placement: PlacementOptions;
  service: SandboxService;
  log: Logger;
}

export class Forks {
  /** Fork snapshots whose copies are starting now: the reconciler leaves them alone. */
  private readonly active = new Set<string>();

  constructor(private readonly d: ForkDeps) {}

  isActive(snapshotId: string): boolean {
    return this.active.has(snapshotId);
  }

  async fork(team: Team, sourceId: string, opts: { count?: number; timeout?: number }): Promise<{ cluster: Cluster; outcomes: ForkOutcome[] }> {
    const count = opts.count ?? DEFAULT_FORK_COUNT;
    if (!Number.isInteger(count) || count < 1 || count > MAX_FORK_COUNT) throw new BadRequest(`count must be an integer from 1 to ${MAX_FORK_COUNT}`);
    const timeout = opts.timeout ?? DEFAULT_FORK_TIMEOUT_S;
    if (timeout > team.maxTimeoutHours * 3600) throw new BadRequest(`Timeout cannot be greater than ${team.maxTimeoutHours} hours`);
    const cluster = await this.d.clusters.forTeam(team);
    const snapshotId = newSnapshotId();
    const log = this.d.log.child({ sandboxId: sourceId, teamId: team.id, snapshotId });
    this.active.add(snapshotId);
    try {
      // Under the source's lock: its checkpoint, and the copies' reservations first, so a fork the team has no
      // room for is a 429 before anything happened to the source.
      const { source, snapshot, copies, placed, deferred } = await this.d.service.whenSettled(sourceId, team.id, async (s) => {
        if (!s) throw new SandboxNotFound(sourceId);
        if (s.state !== 'running' || !s.nodeId) throw new Conflict(`sandbox "${sourceId}" is paused; connect to it before forking it`);
        await this.d.service.refuseWithVolumes(s.id, 'forked');
        const copies = Array.from({ length: count }, () => this.copyOf(s, timeout));
        await this.d.sandboxes.reserveMany(copies, team.maxConcurrentSandboxes);
        try {
          const placed = await this.placementOrder(cluster, s);
          // Every copy placed on the origin first: the snapshot need not reach storage before they start, and never
          // will unless one of them has to move elsewhere. Copies spread over nodes need it committed anyway, and
          // committing it first, before their restores compete for the cores, measured faster (docs/decisions.md).
          const deferred = 'order' in placed && copies.every((_, i) => placed.order[i % placed.order.length] === s.nodeId);
          return { source: s, snapshot: await this.checkpoint(s, snapshotId, deferred, log), copies, placed, deferred };
        } catch (err) {
          await Promise.all(copies.map((c) => this.d.sandboxes.remove(c.id)));
          throw err;
        }
      });
      const t0 = Date.now();
      const outcomes = await this.startAll(cluster, source, snapshot, copies, timeout, placed, deferred, log);
      log.info({ count, started: outcomes.filter((o) => 'sandbox' in o).length, startMs: Date.now() - t0 }, 'sandbox forked');
      // Every copy runs on its own slot now: the snapshot is not needed (the reconciler retries a failed delete).
      this.d.service.background(this.d.cleaner.deleteBestEffort(cluster.id, [snapshotId], source.nodeId).finally(() => this.active.delete(snapshotId)));
      return { cluster, outcomes };
    } catch (err) {
      this.active.delete(snapshotId);
      throw err;
    }
  }

  /** A copy's row: the source's build, resources, metadata, network and lifecycle; its own id and tokens. */
  private copyOf(s: SandboxRecord, timeout: number): SandboxRecord {
    const now = Date.now();
    return {
      ...s,
      id: newSandboxId(),
      nodeId: null,
      envdAccessToken: newAccessToken(),
      trafficAccessToken: s.trafficAccessToken === null ? null : newAccessToken(),
      state: 'creating',
      startedAt: now,
      endAt: now + timeout * 1000,
      endedAt: null,
      endReason: null,
      pauseSnapshotId: null,
      pauseMemory: null,
      stateChangedAt: null,
    };
  }

  /**
   * Candidates once for the whole fork, the origin first (its own files need no download); copy i starts at the
   * i-th of them, so a fork of several spreads over the nodes that can take it.
   */
  private async placementOrder(cluster: Cluster, source: SandboxRecord): Promise<{ order: string[] } | { error: unknown }> {
    try {
      const nodes = (await this.d.links.for(cluster).placementCandidates((all) => placeOn(all, source, this.d.placement))).map((c) => c.nodeId);
      return { order: source.nodeId && nodes.includes(source.nodeId) ? [source.nodeId, ...nodes.filter((n) => n !== source.nodeId)] : nodes };
    } catch (error) {
      return { error };
    }
  }

  /**
   * The source's checkpoint into a `fork` snapshot; the source runs on. Committed to cluster storage before the
   * answer, or `deferred`: kept on the origin until a copy elsewhere asks for it (startAll).
   */
  private async checkpoint(s: SandboxRecord, snapshotId: string, deferred: boolean, log: Logger): Promise<SnapshotRecord> {
    const cluster = await this.d.clusters.require(s.clusterId);
    const nodeBuildId = await this.d.service.pauses.nodeBuildId(s);
    const pending = snapshotOf(s, nodeBuildId, { memory: true, sizeBytes: null, createdAt: Date.now() }, { id: snapshotId, kind: 'fork', status: 'creating', name: null, nodeId: s.nodeId });
    // The row first: a checkpoint whose answer is lost is still found and deleted by the reconciler.
    await this.d.snapshots.insert(pending);
    try {
      const commit = deferred ? SnapshotCommit.DEFERRED : SnapshotCommit.NOW;
      const taken = takenOf(await this.d.links.for(cluster).snapshot(s.nodeId!, s.id, snapshotId, commit));
      await this.d.snapshots.markReady(snapshotId, { sizeBytes: taken.sizeBytes ?? 0, memory: taken.memory, createdAt: pending.createdAt });
      log.info({ sizeBytes: taken.sizeBytes }, 'fork checkpoint taken');
      return { ...pending, ...taken, createdAt: pending.createdAt, status: 'ready' };
    } catch (err) {
      if (!(err instanceof LinkCallError) || MAYBE_DONE.has(err.code)) {
        log.warn({ err }, 'fork checkpoint outcome unknown');
        throw new ClusterUnavailable(`the checkpoint of sandbox "${s.id}" for the fork did not complete`, { cause: err });
      }
      await this.d.snapshots.remove([snapshotId]);
      if (err.code === Code.FailedPrecondition) throw new OperationFailed(`sandbox "${s.id}" could not be forked: ${err.detail}; it keeps running`, { cause: err });
      if (err.code === Code.NotFound) throw new SandboxNotFound(s.id);
      throw new ClusterUnavailable('the cluster refused the fork\'s checkpoint', { cause: err });
    }
  }

  /** Starts every copy (a few at a time), in order; each fails alone. */
  private async startAll(
    cluster: Cluster,
    source: SandboxRecord,
    snapshot: SnapshotRecord,
    copies: SandboxRecord[],
    timeout: number,
    placed: { order: string[] } | { error: unknown },
    deferred: boolean,
    log: Logger,
  ): Promise<ForkOutcome[]> {
    const outcomes: ForkOutcome[] = new Array(copies.length);
    const order = 'order' in placed ? placed.order : [];
    // A deferred snapshot is committed when the first copy tries another node (again after a failed try): one that
    // cannot get it there moves on, to the origin too.
    let commit: Promise<unknown> | undefined;
    const committedFor = async (nodeId: string): Promise<void> => {
      if (nodeId === source.nodeId) return;
      commit ??= this.d.links.for(cluster).snapshot(source.nodeId!, source.id, snapshot.id, SnapshotCommit.PENDING);
      try {
        await commit;
      } catch (err) {
        commit = undefined;
        throw err;
      }
    };
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < copies.length; i = next++) {
        const copy = copies[i]!;
        try {
          if ('error' in placed) throw placed.error;
          const rotated = [...order.slice(i % order.length), ...order.slice(0, i % order.length)];
          outcomes[i] = { sandbox: await this.startCopy(cluster, copy, snapshot, rotated, timeout, deferred ? committedFor : undefined, log.child({ copyId: copy.id })) };
        } catch (err) {
          await this.d.sandboxes.remove(copy.id).catch(() => undefined);
          outcomes[i] = { error: errorEntry(err) };
          log.warn({ copyId: copy.id, err }, 'fork copy did not start');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(START_PARALLELISM, copies.length) }, worker));
    return outcomes;
  }

  private async startCopy(
    cluster: Cluster,
    copy: SandboxRecord,
    snapshot: SnapshotRecord,
    nodeIds: string[],
    timeout: number,
    committedFor: ((nodeId: string) => Promise<void>) | undefined,
    log: Logger,
  ): Promise<SandboxRecord> {
    const net = nodeNetworkOf(copy.allowInternetAccess, copy.network);
    // Its time runs from its start, not from the request: the checkpoint before it may have taken seconds.
    copy.endAt = Date.now() + timeout * 1000;
    const { nodeId, info } = await startOnNodes(
      this.d.links.for(cluster),
      nodeIds,
      {
        sandboxId: copy.id,
        templateId: copy.templateId,
        buildId: snapshot.nodeBuildId,
        teamId: copy.teamId,
        vcpu: copy.cpuCount,
        memoryMb: copy.memoryMb,
        diskMb: copy.diskMb,
        // The snapshot keeps the env vars the source's envd was initialised with.
        envVars: {},
        metadata: copy.metadata,
        allowInternetAccess: net.allowInternetAccess,
        egress: net.egress,
        maskRequestHost: net.maskRequestHost,
        envdAccessToken: copy.envdAccessToken,
        startMs: copy.startedAt,
        endMs: nodeEndMs(copy, copy.endAt),
        snapshotId: snapshot.id,
      },
      copy.trafficAccessToken,
      { describe: `cannot start a copy of sandbox "${snapshot.sandboxId}"`, ...(committedFor ? { before: committedFor } : {}) },
      log,
    );
    copy.nodeId = nodeId;
    copy.envdVersion = info.envdVersion || copy.envdVersion;
    copy.state = 'running';
    await this.d.sandboxes.markRunning(copy.id, nodeId, copy.envdVersion);
    await this.d.sandboxes.setEndAt(copy.id, copy.endAt);
    log.info({ nodeId }, 'fork copy started');
    return copy;
  }
}

/** A copy's failure as E2B's per-copy `Error` (the SDK maps `code` as it maps an HTTP status). */
function errorEntry(err: unknown): components['schemas']['Error'] {
  if (err instanceof CoveError) {
    const ec = err.errorCode ?? e2bErrorCode[err.code];
    return { code: httpStatus[err.code], message: err.message, ...(ec ? { error_code: ec } : {}) };
  }
  return { code: 500, message: 'internal server error' };
}
