// The warm pool's refill yields to a burst of claims: a boot costs many times a claim in CPU, so boots started at a
// burst's first claim slowed its other claims and envd /inits (docs/performance.md, "Bursts"). Driven through the
// pool's public interface over a stand-in runtime that records when each boot starts: the policy is what is tested,
// the real boots are the e2e bench's.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { REFILL_MAX_DEFER_MS, REFILL_QUIET_MS, WarmPool } from '../src/sandboxes/warm-pool.js';
import type { SandboxRuntime, SlotInfo } from '../src/sandbox/runtime.js';
import { eventually } from '@cove/test-support/eventually';

function standIn(): { runtime: SandboxRuntime; bootsAt: number[] } {
  const bootsAt: number[] = [];
  let n = 0;
  const runtime = {
    whenTemplateReady: async () => undefined,
    // An address nothing listens on: the pool's envd warm-up fails fast and is only logged.
    boot: async (o: { templateId: string; diskMb: number }): Promise<SlotInfo> => {
      bootsAt.push(Date.now());
      return { slotId: `s${n++}`, templateId: o.templateId, diskMb: o.diskMb, address: '127.0.0.1', pid: 1, initToken: 't', createdAt: new Date().toISOString() };
    },
    destroy: async () => undefined,
  } as unknown as SandboxRuntime;
  return { runtime, bootsAt };
}

function pool(runtime: SandboxRuntime, target: number): WarmPool {
  const limits = { vcpu: 1, memoryMb: 256 };
  return new WarmPool({ runtime, targets: { base: target }, diskMb: 1024, idleLimits: limits, serverIdleLimits: limits, readyTimeoutMs: 1000, concurrency: 2, log: pino({ level: 'silent' }) });
}

const ready = (p: WarmPool) => p.stats().find((s) => s.templateId === 'base')?.ready ?? 0;
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a burst of takes starts no boot until the takes stop, then refills to the target', async () => {
  const { runtime, bootsAt } = standIn();
  const p = pool(runtime, 6);
  p.start();
  await eventually(() => ready(p) === 6, 5000, 'the pool filled');
  const filled = bootsAt.length;
  // Six claims arriving over ~150 ms, as a burst's creates do.
  for (let i = 0; i < 6; i++) {
    assert.ok(p.take('base', 1024), `take ${i}`);
    await pause(30);
  }
  const lastTake = Date.now();
  assert.equal(bootsAt.length, filled, 'no boot while the burst claims');
  await eventually(() => ready(p) === 6, 5000, 'refilled after the burst');
  const firstRefill = bootsAt[filled]!;
  assert.ok(firstRefill - lastTake >= REFILL_QUIET_MS - 30, `the refill waited for the takes to stop (${firstRefill - lastTake} ms)`);
  await p.close();
});

test('a steady stream of takes still refills within REFILL_MAX_DEFER_MS, and a refill under way keeps going', async () => {
  const { runtime, bootsAt } = standIn();
  const p = pool(runtime, 40);
  p.start();
  await eventually(() => ready(p) === 40, 10_000, 'the pool filled');
  const filled = bootsAt.length;
  const firstTake = Date.now();
  // A take every 100 ms (never a quiet REFILL_QUIET_MS) for twice the longest deferral.
  while (Date.now() - firstTake < 2 * REFILL_MAX_DEFER_MS) {
    assert.ok(p.take('base', 1024));
    await pause(100);
  }
  assert.ok(bootsAt.length > filled, 'the pool refilled during the stream');
  assert.ok(bootsAt[filled]! - firstTake <= REFILL_MAX_DEFER_MS + 150, `first refill ${bootsAt[filled]! - firstTake} ms after the first take`);
  await eventually(() => ready(p) === 40, 10_000, 'and it reaches its target');
  await p.close();
});
