// Warm pools: booted slots per template, envd listening but not initialised, waiting to be claimed.
// A Create that finds one skips the boot (the slow part) and only pays claim + /init. Refills run in the
// background with bounded concurrency, never above the target per template; failures are logged and
// retried with exponential backoff, and never reach the caller or crash the node. A template the node still
// builds in the background (code-interpreter-v1) is not booted before it is ready. A slot of a template with a start
// command (code-interpreter-v1's server) joins the pool only once its ready command passed, so a Create from the
// pool gets a server that already runs.

import type { Logger } from 'pino';
import { builtinStartOf } from '../code-interpreter.js';
import { readyBuiltinSlot } from './template-start.js';
import type { SandboxRuntime, SlotInfo, SlotLimits } from '../sandbox/runtime.js';
import { BootBackoff } from './boot-backoff.js';
import type { BootPermits } from './boot-permits.js';
import { PoolBoots, type PoolEntry } from './pool-boots.js';

export interface WarmPoolOptions {
  runtime: SandboxRuntime;
  /** Ready slots wanted per template. */
  targets: Readonly<Record<string, number>>;
  /** Disk size warm slots are booted with; a Create asking for another size misses the pool. */
  diskMb: number;
  /** Limits while waiting (claim raises them to the sandbox's own). */
  idleLimits: SlotLimits;
  /**
   * Limits while waiting for a template with a start command: its server and kernels start and idle under
   * them (caps, not reservations: they count nowhere until a Create claims the slot).
   */
  serverIdleLimits: SlotLimits;
  /** Bound on a start template's ready command. */
  readyTimeoutMs: number;
  /** Boots in flight at once, over all templates. */
  concurrency: number;
  /** The node's bound on boots at once, shared with the other pools and with Creates (none: only `concurrency`). */
  permits?: BootPermits;
  /**
   * How long a refill waits after a lone take (the template's first in a while) that left the pool a ready slot.
   * The new sandbox's first command follows its Create within milliseconds, and a boot's host-side work would share
   * the cores with it. A take that emptied the pool refills at once: the next Create would boot on its own anyway.
   */
  refillDelayMs?: number;
  /**
   * Takes in quick succession (a burst) that leave the pool a ready slot: the refill waits until they pause this
   * long, so the burst's claims, `/init`s and first commands have the cores before the replacement boots do.
   */
  burstQuietMs?: number;
  /** The longest a refill waits for a burst to pause, from the first take it waited for: a steady stream still refills. */
  burstMaxWaitMs?: number;
  log: Logger;
}

/** docs/performance.md "The refill after a lone take": long enough for a create's first command, short against a boot. */
export const DEFAULT_REFILL_DELAY_MS = 100;
/**
 * A take this long after the template's previous one is a lone take: the delay plus a warm boot (~250 ms wall here)
 * fit in the gap, so a deferred refill is done before the next take. Closer takes are a burst's.
 */
const LONE_TAKE_GAP_MS = 400;
/** docs/performance.md "A burst spread over the pools, refilled after it": a burst of 20 and its first commands fit in it. */
export const DEFAULT_BURST_QUIET_MS = 400;
export const DEFAULT_BURST_MAX_WAIT_MS = 1000;

export interface WarmPoolStats {
  templateId: string;
  ready: number;
  target: number;
}

interface TemplatePool extends PoolEntry {
  /** Whether the node has the template yet (background builds). */
  available: boolean;
  /** Bumped when a new build of the template replaces the one its slots were booted from. */
  generation: number;
  /** When a Create last took a slot of it (ms since the epoch; 0: never). */
  lastTakeAt: number;
}


export class WarmPool {
  private readonly pools = new Map<string, TemplatePool>();
  private closed = false;
  private readonly boots: PoolBoots;
  private deferredFill: NodeJS.Timeout | undefined;
  /** When the first take the deferred refill waits for happened (ms since the epoch). */
  private deferredSince: number | undefined;

  constructor(private readonly opts: WarmPoolOptions) {
    this.boots = new PoolBoots({ ...opts, what: 'warm slot' }, () => this.fill());
    for (const templateId of Object.keys(opts.targets)) {
      this.pools.set(templateId, { ready: [], booting: 0, backoff: new BootBackoff(), available: false, generation: 0, lastTakeAt: 0 });
    }
  }

  /** Start filling every pool up to its target. */
  start(): void {
    this.opts.runtime.onTemplateReplaced((templateId) => void this.recycle(templateId));
    for (const [templateId, pool] of this.pools) {
      void this.opts.runtime.whenTemplateReady(templateId).then(() => {
        pool.available = true;
        this.fill();
      });
    }
  }

  /** A ready slot of the template booted with `diskMb`, removed from the pool; undefined on a miss. */
  take(templateId: string, diskMb: number): SlotInfo | undefined {
    const pool = this.pools.get(templateId);
    if (!pool || diskMb !== this.opts.diskMb) return undefined;
    const slot = pool.ready.shift();
    if (!slot) return undefined;
    const now = Date.now();
    const lone = now - pool.lastTakeAt >= LONE_TAKE_GAP_MS;
    pool.lastTakeAt = now;
    // An emptied pool refills at once: the next Create would boot on its own anyway, and the refill only later.
    if (pool.ready.length === 0) this.fill();
    else this.fillAfter(now, lone ? (this.opts.refillDelayMs ?? DEFAULT_REFILL_DELAY_MS) : (this.opts.burstQuietMs ?? DEFAULT_BURST_QUIET_MS));
    return slot;
  }

  /** Fills once no take came for `quietMs`, or at the burst's longest wait, whichever is first. */
  private fillAfter(now: number, quietMs: number): void {
    clearTimeout(this.deferredFill);
    this.deferredSince ??= now;
    const wait = Math.min(quietMs, this.deferredSince + (this.opts.burstMaxWaitMs ?? DEFAULT_BURST_MAX_WAIT_MS) - now);
    const run = () => {
      this.deferredFill = this.deferredSince = undefined;
      this.fill();
    };
    if (wait <= 0) run();
    else this.deferredFill = setTimeout(run, wait);
  }

  /** Slot ids currently held by the pools (ready or not yet claimed). */
  slotIds(): Set<string> {
    const ids = new Set<string>();
    for (const pool of this.pools.values()) for (const s of pool.ready) ids.add(s.slotId);
    return ids;
  }

  stats(): WarmPoolStats[] {
    return [...this.pools.entries()].map(([templateId, p]) => ({
      templateId,
      ready: p.ready.length,
      target: this.opts.targets[templateId] ?? 0,
    }));
  }

  /** Stop refilling, wait for boots in flight, destroy every ready slot. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.deferredFill);
    for (const pool of this.pools.values()) pool.backoff.cancel();
    await this.boots.settle();
    const slots = [...this.pools.values()].flatMap((p) => p.ready.splice(0));
    await Promise.allSettled(slots.map((s) => this.boots.destroy(s)));
  }

  /**
   * A new build of the template replaced the one the pool's slots were booted from (an upgrade changed its recipe):
   * the ready ones are destroyed and those booting are dropped when they finish, so no create gets the old build.
   */
  private async recycle(templateId: string): Promise<void> {
    const pool = this.pools.get(templateId);
    if (!pool) return;
    pool.generation++;
    const stale = pool.ready.splice(0);
    this.opts.log.info({ templateId, stale: stale.length }, 'template rebuilt: replacing its warm slots');
    this.fill();
    await Promise.allSettled(stale.map((s) => this.boots.destroy(s)));
  }

  private fill(): void {
    if (this.closed) return;
    const now = Date.now();
    for (const [templateId, pool] of this.pools) {
      const target = this.opts.targets[templateId] ?? 0;
      while (
        !this.closed &&
        this.boots.hasRoom &&
        pool.available &&
        pool.ready.length + pool.booting < target &&
        pool.backoff.allows(now)
      ) {
        this.bootOne(templateId, pool);
      }
    }
  }

  private bootOne(templateId: string, pool: TemplatePool): void {
    const log = this.opts.log.child({ templateId });
    const generation = pool.generation;
    this.boots.start(pool, log, async () => {
      const booted = await this.opts.runtime.boot({
        templateId,
        diskMb: this.opts.diskMb,
        limits: builtinStartOf(templateId) ? this.opts.serverIdleLimits : this.opts.idleLimits,
        background: true,
      });
      if (this.closed) {
        await this.boots.destroy(booted);
        return undefined;
      }
      const slot = await readyBuiltinSlot({ runtime: this.opts.runtime, readyTimeoutMs: this.opts.readyTimeoutMs, log }, booted, { warmUp: true });
      if (this.closed || pool.generation !== generation) {
        await this.boots.destroy(slot);
        return undefined;
      }
      return slot;
    });
  }
}
