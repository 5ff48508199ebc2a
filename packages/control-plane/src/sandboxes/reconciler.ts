// Notices sandboxes that ended on their node without the control plane's doing (node restart, OOM, the node's
// own expiry racing ours): asks each node that holds running sandboxes for its list and marks the missing ones
// gone, so list/get stop showing them and they stop counting against the team's limit. A node the edge does
// not list is left alone (an edge that just restarted has not heard from its nodes yet); the evictor ends those
// sandboxes at their end time.

import type { Logger } from 'pino';
import type { ControlLinks } from '../cluster/control-link.js';
import type { ClusterStore } from '../store/cluster-store.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import { Periodic } from './periodic.js';

export class Reconciler {
  private readonly loop: Periodic;

  constructor(
    private readonly store: SandboxStore,
    private readonly clusters: ClusterStore,
    private readonly links: ControlLinks,
    intervalMs: number,
    /** Sandboxes younger than this are skipped: their Create may still be in flight when the node lists. */
    private readonly graceMs: number,
    private readonly log: Logger,
  ) {
    this.loop = new Periodic('reconciler', intervalMs, () => this.runOnce(), log);
  }

  /** One pass; returns the ids marked gone. */
  async runOnce(now = Date.now()): Promise<string[]> {
    const byCluster = new Map<string, Map<string, SandboxRecord[]>>();
    for (const s of await this.store.listLive()) {
      if (s.state !== 'running' || !s.nodeId || s.startedAt > now - this.graceMs) continue;
      const nodes = byCluster.get(s.clusterId) ?? new Map<string, SandboxRecord[]>();
      nodes.set(s.nodeId, [...(nodes.get(s.nodeId) ?? []), s]);
      byCluster.set(s.clusterId, nodes);
    }
    const gone: string[] = [];
    for (const [clusterId, nodes] of byCluster) {
      const cluster = await this.clusters.get(clusterId);
      if (!cluster) continue;
      const link = this.links.for(cluster);
      let listed: Set<string>;
      try {
        listed = new Set((await link.listNodes()).map((n) => n.nodeId));
      } catch (err) {
        this.log.debug({ clusterId, err }, 'reconcile: cluster unreachable');
        continue;
      }
      for (const [nodeId, sandboxes] of nodes) {
        if (!listed.has(nodeId)) continue;
        let present: Set<string>;
        try {
          present = new Set((await link.list(nodeId)).map((i) => i.sandboxId));
        } catch (err) {
          this.log.debug({ clusterId, nodeId, err }, 'reconcile: node did not list');
          continue;
        }
        for (const s of sandboxes) {
          if (present.has(s.id)) continue;
          if (await this.store.markKilled(s.id, 'gone on node', now)) {
            gone.push(s.id);
            this.log.warn({ sandboxId: s.id, teamId: s.teamId, nodeId }, 'sandbox is gone from its node');
          }
        }
      }
    }
    return gone;
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}
