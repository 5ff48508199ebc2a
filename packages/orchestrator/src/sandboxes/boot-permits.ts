// How many slots a node boots at once, over the warm pools, the build pools and the Creates that missed them. A
// boot is mostly host and kernel work (a loop device and filesystem, mounts, a network namespace, crun, envd's
// start) on the node's own cores: past a few at once they only slow each other down. Without a bound, creates
// arriving faster than the node boots each started their own boot, and every boot then took ~30 s instead of ~1 s
// (docs/performance.md "Sustained creates"). With it, boots run at the node's pace and the rest wait their turn.
// Creates come first: a waiting Create is given the next permit before any pool refill.
// It also keeps how long a boot takes here now (a moving average), so a node can bound a Create's wait in time
// rather than by a count of Creates ahead of it: a count that means a few seconds on an idle node means tens of
// seconds on a saturated one (docs/performance.md "Sustained creates").

export type BootKind = 'create' | 'refill';

/** What a boot run under a permit may say about itself. */
export interface PermitTurn {
  /** This turn booted nothing (a Create took a slot the pool readied meanwhile): its time is not a boot's. */
  untimed(): void;
}

/** Weight of the newest boot in the moving average: the last ~5 boots dominate. */
const EWMA_WEIGHT = 0.2;

export class BootPermits {
  private free: number;
  private readonly waiting: Record<BootKind, Array<() => void>> = { create: [], refill: [] };
  private averageMs: number | undefined;

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`boot permits must be a whole number ≥ 1, not ${size}`);
    this.free = size;
  }

  /** Runs `boot` holding a permit, once its turn comes; a boot that succeeds counts towards the average. */
  async run<T>(kind: BootKind, boot: (turn: PermitTurn) => Promise<T>): Promise<T> {
    await this.take(kind);
    let timed = true;
    const t0 = performance.now();
    try {
      const result = await boot({ untimed: () => void (timed = false) });
      if (timed) this.recordBoot(performance.now() - t0);
      return result;
    } finally {
      this.release();
    }
  }

  /** A boot's recent duration (moving average, ms), or undefined before the first one ended. */
  get bootMs(): number | undefined {
    return this.averageMs;
  }

  /**
   * How long a Create asking now would wait for its permit, at the recent boot time: the Creates ahead of it go
   * first, `size` at a time, and the boots running now end first. 0 when a permit is free; undefined while no boot
   * time is known yet.
   */
  expectedCreateWaitMs(): number | undefined {
    if (this.free > 0) return 0;
    if (this.averageMs === undefined) return undefined;
    return (Math.floor(this.waiting.create.length / this.size) + 1) * this.averageMs;
  }

  private recordBoot(ms: number): void {
    this.averageMs = this.averageMs === undefined ? ms : this.averageMs + EWMA_WEIGHT * (ms - this.averageMs);
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
