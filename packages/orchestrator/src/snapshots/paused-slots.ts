// Paused slots kept on this node (disk, cgroup, address, CRIU images), so a resume here restores in place without
// reading storage. Committed ones are a cache bounded by `max` (the oldest go first; storage has the snapshot);
// the slot of a pause not yet committed is part of its only copy and is never evicted.

import type { Logger } from 'pino';
import type { SandboxRuntime } from '../sandbox/runtime.js';

export class PausedSlots {
  /** snapshot id → slot id, oldest first. */
  private readonly slots = new Map<string, string>();

  constructor(
    private readonly o: { runtime: SandboxRuntime; max: number; uncommitted: (snapshotId: string) => boolean; log: Logger },
  ) {}

  has(snapshotId: string): boolean {
    return this.slots.has(snapshotId);
  }

  /** Paused sandboxes this node holds for a resume in place. */
  get size(): number {
    return this.slots.size;
  }

  /** Keeps the slot (newest), evicting the oldest committed ones beyond the bound. */
  keep(snapshotId: string, slotId: string): void {
    this.slots.set(snapshotId, slotId);
    const evictable = [...this.slots.keys()].filter((id) => !this.o.uncommitted(id) && id !== snapshotId);
    while (this.slots.size > this.o.max && evictable.length > 0) {
      const oldest = evictable.shift()!;
      const oldSlot = this.slots.get(oldest)!;
      this.slots.delete(oldest);
      void this.o.runtime.destroy(oldSlot).catch((err: unknown) => this.o.log.warn({ err, slotId: oldSlot }, 'dropping a cached paused slot failed'));
    }
  }

  /** Takes the slot out (a restore works on it); put it back with `putBack` when the restore failed. */
  take(snapshotId: string): string | undefined {
    const slotId = this.slots.get(snapshotId);
    this.slots.delete(snapshotId);
    return slotId;
  }

  putBack(snapshotId: string, slotId: string): void {
    this.slots.set(snapshotId, slotId);
  }

  /** Destroys the kept slot of the snapshot, if any. */
  async drop(snapshotId: string): Promise<void> {
    const slotId = this.take(snapshotId);
    if (slotId) await this.o.runtime.destroy(slotId).catch((err: unknown) => this.o.log.warn({ err, slotId }, 'destroying a cached paused slot failed'));
  }
}
