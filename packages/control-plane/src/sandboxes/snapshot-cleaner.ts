// Deleting snapshots from cluster storage: DeleteSnapshots on the node that wrote them (it also drops its cached
// copy) when the edge lists it as answering, else on any answering node (storage is shared). A row goes only
// once a node confirmed, so a snapshot is never forgotten while its bytes may remain: the reconciler's sweep
// (`sweep`) retries whatever a best-effort deletion left behind.

import type { Logger } from 'pino';
import type { ControlLinks } from '../cluster/control-link.js';
import { answeringNodes } from '../cluster/placement.js';
import { ClusterUnavailable } from '../errors.js';
import type { Cluster, ClusterStore } from '../store/cluster-store.js';
import type { SnapshotRecord, SnapshotStore } from '../store/snapshot-store.js';

export class SnapshotCleaner {
  constructor(
    private readonly snapshots: SnapshotStore,
    private readonly clusters: ClusterStore,
    private readonly links: ControlLinks,
    private readonly log: Logger,
  ) {}

  /** Deletes the snapshots (ids, all of `cluster`) and then their rows; ClusterUnavailable when no node could. */
  async delete(cluster: Cluster, ids: string[], preferNodeId: string | null): Promise<void> {
    if (ids.length === 0) return;
    const link = this.links.for(cluster);
    const answering = answeringNodes(await link.listNodes());
    const order = preferNodeId && answering.includes(preferNodeId) ? [preferNodeId, ...answering.filter((n) => n !== preferNodeId)] : answering;
    let lastError: unknown;
    for (const nodeId of order) {
      try {
        await link.deleteSnapshots(nodeId, ids);
        await this.snapshots.remove(ids);
        this.log.info({ clusterId: cluster.id, nodeId, snapshotIds: ids }, 'snapshots deleted');
        return;
      } catch (err) {
        lastError = err;
        this.log.warn({ clusterId: cluster.id, nodeId, snapshotIds: ids, err }, 'DeleteSnapshots failed on node');
      }
    }
    throw new ClusterUnavailable(
      order.length === 0 ? 'no healthy node can delete the snapshot now; try again later' : 'no node could delete the snapshot',
      { cause: lastError },
    );
  }

  /** As `delete`, but failures are only logged: the sweep retries. */
  async deleteBestEffort(clusterId: string, ids: string[], preferNodeId: string | null): Promise<boolean> {
    try {
      await this.delete(await this.clusters.require(clusterId), ids, preferNodeId);
      return true;
    } catch (err) {
      this.log.warn({ clusterId, snapshotIds: ids, err }, 'snapshot deletion failed; the reconciler retries it');
      return false;
    }
  }

  /** Deletes `garbage` (from SnapshotStore.garbage), grouped by cluster and writing node. Returns the ids deleted. */
  async sweep(garbage: readonly SnapshotRecord[]): Promise<string[]> {
    const groups = new Map<string, { clusterId: string; nodeId: string | null; ids: string[] }>();
    for (const s of garbage) {
      const key = `${s.clusterId}\0${s.nodeId ?? ''}`;
      const g = groups.get(key) ?? { clusterId: s.clusterId, nodeId: s.nodeId, ids: [] };
      g.ids.push(s.id);
      groups.set(key, g);
    }
    const done: string[] = [];
    for (const g of groups.values()) {
      const cluster = await this.clusters.get(g.clusterId);
      if (!cluster) continue;
      try {
        await this.delete(cluster, g.ids, g.nodeId);
        done.push(...g.ids);
      } catch (err) {
        this.log.debug({ clusterId: g.clusterId, err }, 'sweep: snapshots not deleted this pass');
      }
    }
    return done;
  }
}
