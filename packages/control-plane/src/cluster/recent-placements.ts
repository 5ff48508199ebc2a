// Sandboxes placed on each node lately, per template: what a node's report cannot show yet. A node reports every
// 2 s (its heartbeat, then the edge's list), so the ready warm slots it reported may already be taken by creates
// placed since; placement subtracts these (placement.ts `preferWarm`). Counted when a placement picks the node, not
// when the create is sent: a burst's placements all rank from the same shared list before the first is sent. A create
// that fails there and lands on the next candidate (or nowhere) moves its count there (or takes it back).

/** Longer than a node's default heartbeat (2 s) plus the edge's listing, so a placement counts until a report shows it. */
export const RECENT_PLACEMENT_MS = 3000;

export class RecentPlacements {
  private readonly placed = new Map<string, number[]>();

  constructor(
    private readonly windowMs = RECENT_PLACEMENT_MS,
    private readonly now: () => number = Date.now,
  ) {}

  add(nodeId: string, templateId: string): void {
    const key = keyOf(nodeId, templateId);
    this.placed.set(key, [...this.prune(key), this.now()]);
  }

  /** Takes one placement on `nodeId` back: its create went to another node, or to none. */
  remove(nodeId: string, templateId: string): void {
    const key = keyOf(nodeId, templateId);
    const times = this.prune(key);
    times.pop();
    if (times.length === 0) this.placed.delete(key);
  }

  /** Placements on `nodeId` for `templateId` within the window. */
  count(nodeId: string, templateId: string): number {
    return this.prune(keyOf(nodeId, templateId)).length;
  }

  private prune(key: string): number[] {
    const since = this.now() - this.windowMs;
    const times = (this.placed.get(key) ?? []).filter((t) => t > since);
    if (times.length === 0) this.placed.delete(key);
    else this.placed.set(key, times);
    return times;
  }
}

/** The map key of a node and a template: the two ids joined by a NUL, in one place for add, remove and count. */
function keyOf(nodeId: string, templateId: string): string {
  return `${nodeId}\0${templateId}`;
}
