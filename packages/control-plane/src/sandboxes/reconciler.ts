// Brings the store back in line with the cluster, every pass:
// - running sandboxes their node no longer lists (node restart, OOM, the node's own expiry racing ours) are marked
//   gone, so list/get stop showing them and they stop counting against the team's limit. A node the edge does not
//   list is left alone (an edge that just restarted has not heard from its nodes yet); the evictor ends those
//   sandboxes at their end time. Paused sandboxes are on no node and are never checked here.
// - interrupted transitions (docs/pause-resume.md): a `pausing` row nobody works on gets the same Pause again
//   (idempotent on the node) until the node answers; a `resuming` row older than `staleMs` becomes running when a
//   node runs it, else paused again.
// - snapshots nothing needs any more (a resumed or killed sandbox's pause snapshot whose deletion failed, a
//   persistent snapshot whose Snapshot call never answered, an interrupted fork's snapshot) are deleted from
//   cluster storage.

import type { SandboxInfo } from '@cove/contracts/orchestrator';
import type { Logger } from 'pino';
import type { ControlLink, ControlLinks } from '../cluster/control-link.js';
import type { ClusterStore } from '../store/cluster-store.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { SnapshotStore } from '../store/snapshot-store.js';
import { Periodic } from './periodic.js';
import type { SandboxService } from './sandbox-service.js';
import type { SnapshotCleaner } from './snapshot-cleaner.js';

export interface ReconcilerDeps {
  store: SandboxStore;
  snapshots: SnapshotStore;
  clusters: ClusterStore;
  links: ControlLinks;
  service: SandboxService;
  cleaner: SnapshotCleaner;
  intervalMs: number;
  /** Sandboxes younger than this are skipped: their Create may still be in flight when the node lists. */
  graceMs: number;
  /** A transition or a snapshot call older than this has certainly lost its caller (twice the link deadline and more). */
  staleMs: number;
  log: Logger;
}

export class Reconciler {
  private readonly loop: Periodic;

  constructor(private readonly d: ReconcilerDeps) {
    this.loop = new Periodic('reconciler', d.intervalMs, () => this.runOnce(), d.log);
  }

  /** One pass; returns the ids marked gone. */
  async runOnce(now = Date.now()): Promise<string[]> {
    const gone = await this.checkRunning(now);
    await this.settleTransitions(now);
    await this.sweepSnapshots(now);
    return gone;
  }

  private async listedNodes(link: ControlLink, clusterId: string): Promise<Set<string> | undefined> {
    try {
      return new Set((await link.listNodes()).map((n) => n.nodeId));
    } catch (err) {
      this.d.log.debug({ clusterId, err }, 'reconcile: cluster unreachable');
      return undefined;
    }
  }

  private async checkRunning(now: number): Promise<string[]> {
    const byCluster = new Map<string, Map<string, SandboxRecord[]>>();
    for (const s of await this.d.store.listLive()) {
      if (s.state !== 'running' || !s.nodeId || s.startedAt > now - this.d.graceMs) continue;
      const nodes = byCluster.get(s.clusterId) ?? new Map<string, SandboxRecord[]>();
      nodes.set(s.nodeId, [...(nodes.get(s.nodeId) ?? []), s]);
      byCluster.set(s.clusterId, nodes);
    }
    const gone: string[] = [];
    for (const [clusterId, nodes] of byCluster) {
      const cluster = await this.d.clusters.get(clusterId);
      if (!cluster) continue;
      const link = this.d.links.for(cluster);
      const listed = await this.listedNodes(link, clusterId);
      if (!listed) continue;
      for (const [nodeId, sandboxes] of nodes) {
        if (!listed.has(nodeId)) continue;
        let present: Set<string>;
        try {
          present = new Set((await link.list(nodeId)).map((i) => i.sandboxId));
        } catch (err) {
          this.d.log.debug({ clusterId, nodeId, err }, 'reconcile: node did not list');
          continue;
        }
        for (const s of sandboxes) {
          if (present.has(s.id)) continue;
          if (await this.d.store.markKilled(s.id, 'gone on node', now)) {
            gone.push(s.id);
            this.d.log.warn({ sandboxId: s.id, teamId: s.teamId, nodeId }, 'sandbox is gone from its node');
          }
        }
      }
    }
    return gone;
  }

  /** Settles `pausing` and `resuming` rows that no operation of this process is working on. */
  private async settleTransitions(now: number): Promise<void> {
    const byCluster = new Map<string, SandboxRecord[]>();
    for (const s of await this.d.store.inTransition()) {
      if (this.d.service.ops.busy(s.id)) continue;
      if (s.state === 'resuming' && (s.stateChangedAt ?? 0) > now - this.d.staleMs) continue;
      byCluster.set(s.clusterId, [...(byCluster.get(s.clusterId) ?? []), s]);
    }
    for (const [clusterId, rows] of byCluster) {
      const cluster = await this.d.clusters.get(clusterId);
      if (!cluster) continue;
      const link = this.d.links.for(cluster);
      const listed = await this.listedNodes(link, clusterId);
      if (!listed) continue;
      let running: Map<string, { nodeId: string; info: SandboxInfo }> | undefined | null = null;
      for (const s of rows) {
        await this.d.service.ops
          .exclusive(s.id, Date.now() + this.d.staleMs, async () => {
            const cur = await this.d.store.get(s.id);
            if (cur?.state === 'pausing') {
              if (!cur.nodeId || !listed.has(cur.nodeId)) return;
              await this.d.service.pauses.settlePausing(cur, now, this.d.staleMs);
            } else if (cur?.state === 'resuming') {
              // Where every listed node runs what; decided only when all of them answered.
              if (running === null) running = await this.whereRunning(link, listed);
              if (!running) return;
              await this.d.service.pauses.settleResuming(cur, running.get(cur.id), now);
            }
          })
          .catch((err: unknown) => this.d.log.warn({ sandboxId: s.id, err }, 'reconcile: transition not settled'));
      }
    }
  }

  private async whereRunning(link: ControlLink, nodes: Set<string>): Promise<Map<string, { nodeId: string; info: SandboxInfo }> | undefined> {
    const where = new Map<string, { nodeId: string; info: SandboxInfo }>();
    for (const nodeId of nodes) {
      try {
        for (const info of await link.list(nodeId)) where.set(info.sandboxId, { nodeId, info });
      } catch (err) {
        this.d.log.debug({ nodeId, err }, 'reconcile: node did not list; interrupted resumes wait');
        return undefined;
      }
    }
    return where;
  }

  private async sweepSnapshots(now: number): Promise<void> {
    const garbage = (await this.d.snapshots.garbage(now - this.d.staleMs)).filter((s) =>
      s.kind === 'pause' ? true : s.kind === 'fork' ? !this.d.service.forks.isActive(s.id) : !this.d.service.ops.busy(s.sandboxId),
    );
    if (garbage.length === 0) return;
    const done = await this.d.cleaner.sweep(garbage);
    if (done.length > 0) this.d.log.info({ snapshotIds: done }, 'reconcile: unneeded snapshots deleted');
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}
