// The pause/resume state machine (docs/pause-resume.md, "Control plane"): each transition starts with one
// conditional update of the sandbox row, then calls the node through the control link, then commits or rolls
// back. Callers (SandboxService, the evictor, the reconciler) serialise work on one sandbox with SandboxOps;
// this module only knows rows and nodes.
//
//   running ─pause─▶ pausing ─OK─▶ paused ─connect─▶ resuming ─Create OK─▶ running
//                       │ refused → running            │ failed → paused
//                       │ uncertain → stays pausing (the reconciler repeats the same Pause)
//                       └ unknown on the node → killed

import { Code } from '@connectrpc/connect';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { SandboxInfo, SnapshotInfo } from '@cove/contracts/orchestrator';
import type { Logger } from 'pino';
import { LinkCallError, type ControlLink, type ControlLinks } from '../cluster/control-link.js';
import { placeOn, type PlacementOptions } from '../cluster/placement.js';
import { ClusterUnavailable, Conflict, OperationFailed, SandboxNotFound } from '../errors.js';
import type { ClusterStore } from '../store/cluster-store.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { SnapshotRecord } from '../store/snapshot-store.js';
import type { Team } from '../store/team-store.js';
import { newPauseSnapshotId } from './ids.js';
import { MAYBE_DONE, preferNode, startOnNodes } from './node-start.js';
import type { SnapshotCleaner } from './snapshot-cleaner.js';
import { nodeEndMs } from './node-end.js';
import { nodeNetworkOf } from './network.js';

/** What the node reported about a snapshot it wrote. */
export interface Taken {
  memory: boolean;
  sizeBytes: number | null;
  createdAt: number;
}

export const takenOf = (info: SnapshotInfo): Taken => ({
  memory: info.memory,
  sizeBytes: Number(info.sizeBytes),
  createdAt: info.createdAt ? timestampMs(info.createdAt) : Date.now(),
});

/** A snapshot row of sandbox `s`: its build and resources, so a sandbox can start from it on any node. */
export function snapshotOf(
  s: SandboxRecord,
  nodeBuildId: string,
  taken: Taken,
  extra: Pick<SnapshotRecord, 'id' | 'kind' | 'status' | 'name' | 'nodeId'>,
): SnapshotRecord {
  return {
    ...extra,
    ...taken,
    teamId: s.teamId,
    clusterId: s.clusterId,
    sandboxId: s.id,
    templateId: s.templateId,
    alias: s.alias,
    buildId: s.buildId,
    nodeBuildId,
    envdVersion: s.envdVersion,
    cpuCount: s.cpuCount,
    memoryMb: s.memoryMb,
    diskMb: s.diskMb,
  };
}

export class PauseResume {
  constructor(
    private readonly sandboxes: SandboxStore,
    private readonly clusters: ClusterStore,
    private readonly links: ControlLinks,
    private readonly cleaner: SnapshotCleaner,
    private readonly placement: PlacementOptions,
    private readonly log: Logger,
    /** Runs work that must not hold up the caller's answer (snapshot deletion after a resume). */
    private readonly background: (work: Promise<unknown>) => void,
  ) {}

  private async link(s: SandboxRecord): Promise<ControlLink> {
    return this.links.for(await this.clusters.require(s.clusterId));
  }

  /** The build id the node knows: empty for a built-in template (rows from before migration 0003 lack it). */
  async nodeBuildId(s: Pick<SandboxRecord, 'clusterId' | 'templateId' | 'buildId' | 'nodeBuildId'>): Promise<string> {
    if (s.nodeBuildId !== null) return s.nodeBuildId;
    const t = await this.clusters.findTemplate(s.clusterId, s.templateId);
    return t && t.teamId === null ? '' : s.buildId;
  }

  /**
   * Pauses a running sandbox: running → pausing (409 if it already left running for a pause), Pause on its node,
   * then paused. Errors: OperationFailed (the node refused; it runs on), SandboxNotFound (its node no longer has it),
   * ClusterUnavailable (uncertain: the row stays `pausing` and the reconciler repeats the same Pause).
   */
  async pause(s: SandboxRecord, memory: boolean): Promise<void> {
    const snapshotId = newPauseSnapshotId(s.id);
    if (!s.nodeId || !(await this.sandboxes.beginPause(s.id, snapshotId, memory, Date.now()))) {
      const cur = await this.sandboxes.get(s.id);
      if (cur && ['pausing', 'paused'].includes(cur.state)) throw new Conflict(`sandbox "${s.id}" is already paused`);
      throw new SandboxNotFound(s.id);
    }
    const log = this.log.child({ sandboxId: s.id, teamId: s.teamId, nodeId: s.nodeId, snapshotId });
    const link = await this.link(s);
    let info: SnapshotInfo;
    try {
      info = await link.pause(s.nodeId, s.id, snapshotId, memory);
    } catch (err) {
      if (!(err instanceof LinkCallError) || MAYBE_DONE.has(err.code)) {
        log.warn({ err }, 'pause outcome unknown; left pausing for the reconciler');
        throw new ClusterUnavailable(`the pause of sandbox "${s.id}" did not complete; it is retried until the node answers`, { cause: err });
      }
      if (err.code === Code.FailedPrecondition) {
        await this.sandboxes.abortPause(s.id, snapshotId, Date.now());
        throw new OperationFailed(`sandbox "${s.id}" could not be paused: ${err.detail}; it keeps running`, { cause: err });
      }
      if (err.code === Code.NotFound) {
        // From the node: it no longer has the sandbox. From the edge: the node is not registered, so the
        // Pause reached nobody and the sandbox (wherever it is) runs on.
        const listed = await link.listNodes().then(
          (nodes) => nodes.some((n) => n.nodeId === s.nodeId),
          () => undefined,
        );
        if (listed === undefined) throw new ClusterUnavailable(`the pause of sandbox "${s.id}" did not complete; it is retried until the node answers`, { cause: err });
        if (listed) {
          await this.sandboxes.markKilled(s.id, 'gone on node', Date.now(), ['pausing']);
          log.warn('sandbox was gone from its node when pausing');
          throw new SandboxNotFound(s.id);
        }
      }
      await this.sandboxes.abortPause(s.id, snapshotId, Date.now());
      throw new ClusterUnavailable('the cluster refused the pause', { cause: err });
    }
    await this.commitPause(s, snapshotId, info);
    log.info({ memory: info.memory, sizeBytes: Number(info.sizeBytes), pauseMs: info.pauseMs }, 'sandbox paused');
  }

  private async commitPause(s: SandboxRecord, snapshotId: string, info: SnapshotInfo): Promise<boolean> {
    const snapshot = snapshotOf(s, await this.nodeBuildId(s), takenOf(info), { id: snapshotId, kind: 'pause', status: 'ready', name: null, nodeId: s.nodeId });
    return this.sandboxes.finishPause(s.id, snapshot, Date.now());
  }

  /**
   * Resumes a paused sandbox: paused → resuming (also the concurrency check), Create from its pause snapshot on the
   * node that paused it if it can take it, else on the best other one; running with end = now + seconds. On any
   * failure it is paused again. The pause snapshot is deleted afterwards, in the background.
   */
  async resume(team: Team, s: SandboxRecord, seconds: number, cold: boolean): Promise<SandboxRecord> {
    const snapshotId = s.pauseSnapshotId;
    if (!snapshotId) throw new Conflict(`sandbox "${s.id}" has no pause snapshot`);
    if ((await this.sandboxes.beginResume(team.id, s.id, team.maxConcurrentSandboxes, Date.now())) !== 'resuming') {
      throw new Conflict(`sandbox "${s.id}" is no longer paused; try again`);
    }
    const log = this.log.child({ sandboxId: s.id, teamId: s.teamId, snapshotId });
    let started: { nodeId: string; info: SandboxInfo };
    const startMs = Date.now();
    const endMs = startMs + seconds * 1000;
    try {
      const link = await this.link(s);
      // A built-in template's sandbox resumes only where that template is ready (its lower layers live there).
      const builtIn = (await this.nodeBuildId(s)) === '' ? { templateId: s.templateId, ref: s.templateId } : undefined;
      const nodeIds = preferNode(await link.placementCandidates((nodes) => placeOn(nodes, s, this.placement, builtIn)), s.nodeId);
      let committed = false;
      started = await startOnNodes(
        link,
        nodeIds,
        {
          sandboxId: s.id,
          templateId: s.templateId,
          buildId: await this.nodeBuildId(s),
          teamId: s.teamId,
          vcpu: s.cpuCount,
          memoryMb: s.memoryMb,
          diskMb: s.diskMb,
          // The node restores the env vars envd had from the snapshot's manifest.
          envVars: {},
          metadata: s.metadata,
          // The policy travels with the row: the node applies it before the restored processes get any egress.
          ...nodeNetworkOf(s.allowInternetAccess, s.network),
          envdAccessToken: s.envdAccessToken,
          startMs,
          endMs: nodeEndMs(s, endMs),
          snapshotId,
          cold,
        },
        s.trafficAccessToken,
        {
          describe: `sandbox "${s.id}" stays paused`,
          // A node answers a pause once the snapshot is on its disk and commits it to cluster storage right after;
          // before another node may read it, a repeated (idempotent) Pause on the origin waits for that commit.
          before: async (nodeId) => {
            if (committed || !s.nodeId || nodeId === s.nodeId) return;
            committed = true;
            await link.pause(s.nodeId, s.id, snapshotId, s.pauseMemory ?? true).catch((err: unknown) => {
              log.warn({ err: (err as Error).message, origin: s.nodeId }, 'could not confirm the snapshot is committed; trying the resume anyway');
            });
          },
        },
        log,
      );
    } catch (err) {
      await this.sandboxes.abortResume(s.id, Date.now());
      throw err;
    }
    const envdVersion = started.info.envdVersion || s.envdVersion;
    await this.sandboxes.finishResume(s.id, { nodeId: started.nodeId, envdVersion, startedAt: startMs, endAt: endMs }, Date.now());
    log.info({ nodeId: started.nodeId, from: s.nodeId, cold }, 'sandbox resumed');
    this.background(this.cleaner.deleteBestEffort(s.clusterId, [snapshotId], s.nodeId));
    return { ...s, state: 'running', nodeId: started.nodeId, envdVersion, startedAt: startMs, endAt: endMs, pauseSnapshotId: null, pauseMemory: null };
  }

  /** paused → killed, then its pause snapshot is deleted (a failure is left to the reconciler's sweep). */
  async killPaused(s: SandboxRecord, reason: string): Promise<void> {
    if (!(await this.sandboxes.markKilled(s.id, reason, Date.now(), ['paused']))) throw new SandboxNotFound(s.id);
    if (s.pauseSnapshotId) await this.cleaner.deleteBestEffort(s.clusterId, [s.pauseSnapshotId], s.nodeId);
  }

  /**
   * The reconciler's repair of a `pausing` row nobody works on: repeat the same Pause (idempotent on the node).
   * OK → paused; NOT_FOUND → running if the node lists it, else killed; FAILED_PRECONDITION after `staleMs` with
   * the node still listing it → running (it cannot be checkpointed); anything else → left for the next pass.
   */
  async settlePausing(s: SandboxRecord, now: number, staleMs: number): Promise<SandboxRecord['state'] | undefined> {
    if (!s.nodeId || !s.pauseSnapshotId) return undefined;
    const link = await this.link(s);
    const log = this.log.child({ sandboxId: s.id, nodeId: s.nodeId, snapshotId: s.pauseSnapshotId });
    const listedOnNode = async () => (await link.list(s.nodeId!)).some((i) => i.sandboxId === s.id);
    try {
      const info = await link.pause(s.nodeId, s.id, s.pauseSnapshotId, s.pauseMemory ?? true);
      if (await this.commitPause(s, s.pauseSnapshotId, info)) log.info('interrupted pause completed');
      return 'paused';
    } catch (err) {
      if (!(err instanceof LinkCallError)) throw err;
      if (err.code === Code.NotFound) {
        if (await listedOnNode()) {
          await this.sandboxes.abortPause(s.id, s.pauseSnapshotId, now);
          log.warn('interrupted pause: the node still runs the sandbox');
          return 'running';
        }
        await this.sandboxes.markKilled(s.id, 'lost while pausing', now, ['pausing']);
        log.warn('interrupted pause: the node has neither the sandbox nor its snapshot');
        return 'killed';
      }
      if (err.code === Code.FailedPrecondition && (s.stateChangedAt ?? 0) < now - staleMs && (await listedOnNode())) {
        await this.sandboxes.abortPause(s.id, s.pauseSnapshotId, now);
        log.warn({ err: err.message }, 'interrupted pause: the node refuses it; the sandbox runs on');
        return 'running';
      }
      log.debug({ err: err.message }, 'interrupted pause not settled this pass');
      return undefined;
    }
  }

  /**
   * The reconciler's repair of a `resuming` row nobody works on: `found` is where the cluster's nodes run it (from
   * their lists, all of which answered). On a node → running there; nowhere → paused again.
   */
  async settleResuming(s: SandboxRecord, found: { nodeId: string; info: SandboxInfo } | undefined, now: number): Promise<SandboxRecord['state']> {
    const log = this.log.child({ sandboxId: s.id, snapshotId: s.pauseSnapshotId });
    if (!found) {
      await this.sandboxes.abortResume(s.id, now);
      log.warn('interrupted resume: no node runs the sandbox; paused again');
      return 'paused';
    }
    const i = found.info;
    await this.sandboxes.finishResume(
      s.id,
      {
        nodeId: found.nodeId,
        envdVersion: i.envdVersion || s.envdVersion,
        startedAt: i.startTime ? timestampMs(i.startTime) : (s.stateChangedAt ?? now),
        endAt: i.endTime ? timestampMs(i.endTime) : now,
      },
      now,
    );
    log.warn({ nodeId: found.nodeId }, 'interrupted resume: the sandbox runs; recorded');
    if (s.pauseSnapshotId) await this.cleaner.deleteBestEffort(s.clusterId, [s.pauseSnapshotId], s.nodeId);
    return 'running';
  }
}
