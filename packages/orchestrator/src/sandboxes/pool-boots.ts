// What the warm pool and the build pool share: boots of ready slots in the background, a bounded number at
// once over all of a pool's entries, each tracked so close() can wait for it, each ending with a refill.
// A failure backs off its own entry (BootBackoff) and is logged; it never reaches a caller.

import type { Logger } from 'pino';
import type { SandboxRuntime, SlotInfo } from '../sandbox/runtime.js';
import type { BootBackoff } from './boot-backoff.js';
import type { BootPermits } from './boot-permits.js';

/** One template's (or build's) slots: ready to claim, being booted, and its backoff. */
export interface PoolEntry {
  ready: SlotInfo[];
  booting: number;
  backoff: BootBackoff;
}

export class PoolBoots {
  private inFlight = 0;
  private readonly boots = new Set<Promise<void>>();

  /** `what` names the slots in logs ("warm slot", "warm build slot"); `refill` runs after every boot. */
  constructor(
    private readonly o: { runtime: Pick<SandboxRuntime, 'destroy'>; concurrency: number; log: Logger; what: string; permits?: BootPermits },
    private readonly refill: () => void,
  ) {}

  /** Whether another boot may start now. */
  get hasRoom(): boolean {
    return this.inFlight < this.o.concurrency;
  }

  /** Boots one slot for `entry`; `boot` resolves undefined when the pool no longer wants it (it destroyed it). */
  start(entry: PoolEntry, log: Logger, boot: () => Promise<SlotInfo | undefined>): void {
    entry.booting++;
    this.inFlight++;
    const p = (async () => {
      try {
        // The node's boots at once are bounded over every pool and Create (boot-permits.ts); a refill yields to
        // Creates. The slot is ready before the permit is given back: a Create waiting for that permit finds it
        // and takes it, rather than booting one more beside it.
        const ready = async () => {
          const slot = await boot();
          if (slot) entry.ready.push(slot);
          return slot;
        };
        const slot = this.o.permits ? await this.o.permits.run('refill', ready) : await ready();
        if (!slot) return;
        entry.backoff.succeeded();
        log.debug({ slotId: slot.slotId, ready: entry.ready.length }, `${this.o.what} ready`);
      } catch (err) {
        const backoffMs = entry.backoff.failed(this.refill);
        log.warn({ err, failures: entry.backoff.failures, backoffMs }, `${this.o.what} boot failed`);
      } finally {
        entry.booting--;
        this.inFlight--;
      }
    })();
    this.boots.add(p);
    void p.finally(() => {
      this.boots.delete(p);
      this.refill();
    });
  }

  /** Waits for every boot in flight to end. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.boots]);
  }

  /** Destroys a slot the pool holds; a failure is logged. */
  async destroy(slot: SlotInfo): Promise<void> {
    try {
      await this.o.runtime.destroy(slot.slotId);
    } catch (err) {
      this.o.log.warn({ err, slotId: slot.slotId }, `destroying ${this.o.what} failed`);
    }
  }
}
