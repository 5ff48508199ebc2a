// How many slots a node boots at once, over the warm pools, the build pools and the Creates that missed them. A
// boot is mostly host and kernel work (a loop device and filesystem, mounts, a network namespace, crun, envd's
// start) on the node's own cores: past a few at once they only slow each other down. Without a bound, creates
// arriving faster than the node boots each started their own boot, and every boot then took ~30 s instead of ~1 s
// (docs/performance.md "Sustained creates"). With it, boots run at the node's pace and the rest wait their turn.
// Creates come first: a waiting Create is given the next permit before any pool refill.

export type BootKind = 'create' | 'refill';

export class BootPermits {
  private free: number;
  private readonly waiting: Record<BootKind, Array<() => void>> = { create: [], refill: [] };

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`boot permits must be a whole number ≥ 1, not ${size}`);
    this.free = size;
  }

  /** Runs `boot` holding a permit, once its turn comes. */
  async run<T>(kind: BootKind, boot: () => Promise<T>): Promise<T> {
    await this.take(kind);
    try {
      return await boot();
    } finally {
      this.release();
    }
  }

  /** Boots waiting for a permit, by kind. */
  get queued(): Record<BootKind, number> {
    return { create: this.waiting.create.length, refill: this.waiting.refill.length };
  }

  /** Whether a boot asking now would wait: every permit is held. */
  get exhausted(): boolean {
    return this.free === 0;
  }

  /** Permits held by boots now. */
  get inUse(): number {
    return this.size - this.free;
  }

  private take(kind: BootKind): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting[kind].push(resolve));
  }

  private release(): void {
    const next = this.waiting.create.shift() ?? this.waiting.refill.shift();
    if (next) next();
    else this.free++;
  }
}
