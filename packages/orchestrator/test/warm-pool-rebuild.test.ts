// After an upgrade changed a built-in template's recipe, a node starts the older build until the background build of
// the new one is in place. Its warm pool must then not hand out slots of the older build: ready ones are destroyed,
// one still booting is dropped when it finishes, and the pool fills again. The runtime here is a stand-in that
// records boots and destroys (a real rebuild is a minutes-long mmdebstrap run); the pool is the real one. Also: when a
// take refills.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventually } from '@cove/test-support/eventually';
import { createLogger } from '../src/logger.js';
import type { SandboxRuntime, SlotInfo } from '../src/sandbox/runtime.js';
import { WarmPool } from '../src/sandboxes/warm-pool.js';

/** Boots slots stamped with the build current at boot time; a boot can be held open to land after a rebuild. */
function standInRuntime() {
  let build = 1;
  let n = 0;
  const live = new Map<string, number>();
  const destroyed: string[] = [];
  const replaced: Array<(t: string) => void> = [];
  let hold: Promise<void> | undefined;
  const runtime = {
    whenTemplateReady: async () => undefined,
    onTemplateReplaced: (l: (t: string) => void) => void replaced.push(l),
    boot: async (o: { templateId: string; diskMb: number }): Promise<SlotInfo> => {
      const slotId = `s${++n}`;
      live.set(slotId, build);
      await hold;
      // Port 1 refuses at once: envd's warm-up fails quickly and is only logged.
      return { slotId, templateId: o.templateId, diskMb: o.diskMb, address: '127.0.0.1:1', pid: 0, initToken: '', createdAt: new Date().toISOString() };
    },
    destroy: async (slotId: string) => {
      live.delete(slotId);
      destroyed.push(slotId);
    },
  };
  return {
    runtime: runtime as unknown as SandboxRuntime,
    buildOf: (slotId: string) => live.get(slotId),
    destroyed,
    live,
    rebuild: () => {
      build++;
      for (const l of replaced) l('base');
    },
    holdBoots: () => {
      let release!: () => void;
      hold = new Promise((r) => (release = r));
      return () => {
        hold = undefined;
        release();
      };
    },
  };
}

const limits = { vcpu: 1, memoryMb: 64 };

describe('warm pool after a template rebuild', () => {
  it('replaces ready slots of the older build and drops one that finished booting from it', async () => {
    const rt = standInRuntime();
    const pool = new WarmPool({
      runtime: rt.runtime, targets: { base: 2 }, diskMb: 64, idleLimits: limits, serverIdleLimits: limits,
      readyTimeoutMs: 1000, concurrency: 2, log: createLogger('error'),
    });
    pool.start();
    await eventually(() => pool.stats()[0]!.ready === 2, 5000, 'the pool full');
    const first = [...pool.slotIds()];
    assert.deepEqual(first.map((s) => rt.buildOf(s)), [1, 1]);

    rt.rebuild();
    await eventually(() => pool.stats()[0]!.ready === 2, 5000, 'the pool full again');
    const second = [...pool.slotIds()];
    assert.deepEqual(second.map((s) => rt.buildOf(s)), [2, 2], 'only slots of the new build');
    assert.deepEqual(rt.destroyed.sort(), first.sort(), 'the older ones destroyed');

    // A slot still booting when the next rebuild lands is not pooled.
    const release = rt.holdBoots();
    const taken = pool.take('base', 64)!;
    await eventually(() => rt.live.size === 3, 5000, 'a refill booting');
    const booting = [...rt.live.keys()].find((s) => !second.includes(s))!;
    rt.rebuild();
    release();
    await eventually(() => pool.stats()[0]!.ready === 2, 5000, 'the pool full after the second rebuild');
    assert.ok(rt.destroyed.includes(booting), 'the slot booted from the older build was destroyed');
    assert.ok(!pool.slotIds().has(booting));
    assert.deepEqual([...pool.slotIds()].map((s) => rt.buildOf(s)), [3, 3]);
    assert.equal(rt.buildOf(taken.slotId), 2, 'a slot already claimed is the caller\'s, untouched');
    await pool.close();
    assert.equal(pool.slotIds().size, 0);
  });
});

// A take that leaves the pool a ready slot refills only after a delay: the new sandbox's first command comes within
// milliseconds of its Create (a burst's creates and first commands within a few hundred), and a boot's host-side
// work would share the cores with them. A take that empties the pool refills at once.
describe('warm pool refill after a take', () => {
  const flush = () => new Promise<void>((r) => setImmediate(r));
  type Delays = { refillDelayMs: number; burstQuietMs?: number; burstMaxWaitMs?: number };
  /** A real pool of `target` over a stand-in runtime, full before `body` runs, closed after it. */
  async function withFullPool(target: number, delays: Delays, body: (pool: WarmPool, rt: ReturnType<typeof standInRuntime>) => Promise<void>) {
    const rt = standInRuntime();
    const pool = new WarmPool({
      runtime: rt.runtime, targets: { base: target }, diskMb: 64, idleLimits: limits, serverIdleLimits: limits,
      readyTimeoutMs: 1000, concurrency: 2, ...delays, log: createLogger('error'),
    });
    try {
      pool.start();
      await eventually(() => pool.stats()[0]!.ready === target, 5000, 'the pool full');
      await body(pool, rt);
    } finally {
      await pool.close();
    }
  }
  const take = (pool: WarmPool, n: number) => {
    for (let i = 0; i < n; i++) assert.ok(pool.take('base', 64), 'a ready slot');
  };
  const refilled = (pool: WarmPool, target: number, what: string) => eventually(() => pool.stats()[0]!.ready === target, 5000, what);

  it('waits after a lone take, and after a burst until the takes pause', () =>
    withFullPool(4, { refillDelayMs: 600_000, burstQuietMs: 50, burstMaxWaitMs: 600_000 }, async (pool, rt) => {
      take(pool, 1);
      await flush();
      assert.equal(rt.live.size, 4, 'no boot while the delay after a lone take runs');
      take(pool, 2);
      await flush();
      assert.equal(rt.live.size, 4, 'no boot while the burst goes on');
      await refilled(pool, 4, 'the pool full again once the takes paused');
    }));

  it('refills within the longest wait while takes keep coming', () =>
    withFullPool(3, { refillDelayMs: 600_000, burstQuietMs: 600_000, burstMaxWaitMs: 30 }, async (pool) => {
      take(pool, 2);
      await refilled(pool, 3, 'the pool full again though the burst never paused');
    }));

  it('refills at once when a burst emptied the pool', () =>
    withFullPool(2, { refillDelayMs: 600_000, burstQuietMs: 600_000, burstMaxWaitMs: 600_000 }, async (pool) => {
      take(pool, 2);
      await refilled(pool, 2, 'the pool refilled');
    }));

  it('refills at once when a lone take emptied the pool', () =>
    withFullPool(1, { refillDelayMs: 600_000 }, async (pool, rt) => {
      take(pool, 1);
      await eventually(() => pool.stats()[0]!.ready === 1 && rt.live.size === 2, 5000, 'the pool refilled');
    }));

  it('refills after the delay', () =>
    withFullPool(2, { refillDelayMs: 20 }, async (pool, rt) => {
      take(pool, 1);
      await eventually(() => pool.stats()[0]!.ready === 2 && rt.live.size === 3, 5000, 'the pool refilled');
    }));
});
