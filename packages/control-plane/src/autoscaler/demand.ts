// Creates that failed for lack of capacity, per cluster, over a recent window: the autoscaler's demand signal that
// the nodes' own load cannot show (a create refused by every node leaves no trace in their usage). Kept in memory:
// a restarted control plane forgets at most one window of misses, and the next refused create counts again.

/** The admin route's answer (`GET /admin/clusters/{id}/demand`), what ScalingTarget.demand returns. */
export interface DemandView {
  /** Creates refused with no_capacity within the last `windowSeconds`. */
  failedCreates: number;
  /** When the latest of them was refused (epoch ms); null when none in the window. */
  lastFailedCreateAt: number | null;
  windowSeconds: number;
}

export class CapacityMisses {
  /** Per cluster, the times of its recent misses, oldest first. */
  private readonly misses = new Map<string, number[]>();

  /**
   * `windowMs`: how far back a miss counts; `maxPerCluster`: a tenant looping on creates that cannot be placed
   * grows no list past this (the count saturates, which still says "scale out").
   */
  constructor(
    readonly windowMs = 300_000,
    private readonly maxPerCluster = 1_000,
  ) {}

  record(clusterId: string, now = Date.now()): void {
    const list = this.prune(clusterId, now) ?? [];
    list.push(now);
    if (list.length > this.maxPerCluster) list.splice(0, list.length - this.maxPerCluster);
    this.misses.set(clusterId, list);
  }

  view(clusterId: string, now = Date.now()): DemandView {
    const list = this.prune(clusterId, now) ?? [];
    return { failedCreates: list.length, lastFailedCreateAt: list.at(-1) ?? null, windowSeconds: Math.round(this.windowMs / 1000) };
  }

  private prune(clusterId: string, now: number): number[] | undefined {
    const list = this.misses.get(clusterId);
    if (!list) return undefined;
    const from = list.findIndex((t) => now - t < this.windowMs);
    if (from < 0) {
      this.misses.delete(clusterId);
      return undefined;
    }
    if (from > 0) list.splice(0, from);
    return list;
  }
}
