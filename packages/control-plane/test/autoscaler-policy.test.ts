// The autoscaler's policy (autoscaler/policy.ts) on plain data: a burst adds a node, idleness removes the least
// used one, limits and cooldowns hold, a drain in progress blocks further scale in, and bad configurations are
// refused with every problem named. Creates refused for lack of capacity are their own scale-out
// reason, once: failures the last scale out already answered do not ask for another node.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CapacityMisses } from '../src/autoscaler/demand.js';
import { AutoscalerConfigError, decide, parseAutoscalerConfig, type NodeLoad } from '../src/autoscaler/policy.js';

const GiB = 1024 ** 3;
const node = (nodeId: string, o: Partial<NodeLoad> = {}): NodeLoad => ({
  nodeId,
  status: 'healthy',
  cpuCount: 8,
  cpuAllocated: 0,
  memoryBytes: 16 * GiB,
  memoryAllocatedBytes: 0,
  sandboxCount: 0,
  warmPoolDepth: 2,
  warmPoolTarget: 2,
  ...o,
});
const config = parseAutoscalerConfig({ minNodes: 1, maxNodes: 3, targetFreeFraction: 0.25, scaleInFreeFraction: 0.6, minWarmPoolFraction: 0.5, scaleOutCooldownMs: 60_000, scaleInCooldownMs: 300_000 });
const calm = { failedCreates: 0 };
const NOW = 10_000_000;

describe('autoscaler policy', () => {
  test('a burst adds one node: failed creates, low headroom on CPU or memory, drained warm pools', () => {
    const busy = [node('a', { cpuAllocated: 7, sandboxCount: 7 })];
    assert.deepEqual(decide(config, busy, calm, {}, NOW).action, 'scale_out', 'CPU headroom 12% < 25%');
    const memBusy = [node('a', { memoryAllocatedBytes: 14 * GiB })];
    assert.equal(decide(config, memBusy, calm, {}, NOW).action, 'scale_out', 'memory headroom');
    const d1 = decide(config, [node('a')], { failedCreates: 2 }, {}, NOW);
    assert.deepEqual(d1, { action: 'scale_out', count: 1, reason: '2 create(s) failed for lack of capacity' });
    assert.equal(decide(config, [node('a', { warmPoolDepth: 0, warmPoolTarget: 4 })], calm, {}, NOW).action, 'scale_out', 'warm pools empty');
    assert.equal(decide(config, [node('a', { warmPoolDepth: 2, warmPoolTarget: 4 })], calm, {}, NOW).action, 'none', 'warm pools at half: enough');
  });

  test('idleness removes the least used node, once the rest keep the scale-in headroom', () => {
    const nodes = [node('a', { cpuAllocated: 2, sandboxCount: 2 }), node('b', { cpuAllocated: 1, sandboxCount: 1 }), node('c', { cpuAllocated: 1, sandboxCount: 3 })];
    const d = decide(config, nodes, calm, {}, NOW);
    assert.equal(d.action, 'scale_in');
    assert.equal(d.action === 'scale_in' && d.nodeId, 'b');
    // Without b the others would hold 4 of 16 CPUs — 75% free. With more load they would not: no scale in.
    const loaded = [node('a', { cpuAllocated: 4, sandboxCount: 4 }), node('b', { cpuAllocated: 3, sandboxCount: 3 })];
    assert.equal(decide(config, loaded, calm, {}, NOW).action, 'none');
  });

  test('free CPU is measured against what the nodes place (cpuOvercommit), not their bare CPUs', () => {
    // Two 2-CPU nodes, one 2-vCPU sandbox on each: bare CPUs would call the rest full and never scale in.
    const small = (id: string) => node(id, { cpuCount: 2, cpuAllocated: 2, sandboxCount: 1 });
    const bare = parseAutoscalerConfig({ minNodes: 1, maxNodes: 3, targetFreeFraction: 0.3, scaleInFreeFraction: 0.5 });
    assert.equal(decide(bare, [small('a'), small('b')], calm, {}, NOW).action, 'scale_out', 'with bare CPUs both nodes are full');
    const over = parseAutoscalerConfig({ minNodes: 1, maxNodes: 2, targetFreeFraction: 0.3, scaleInFreeFraction: 0.5, cpuOvercommit: 4 });
    const d = decide(over, [small('a'), small('b')], calm, {}, NOW);
    assert.deepEqual(d, { action: 'scale_in', nodeId: 'b', reason: 'idle: without node b the cluster keeps 50% free' });
    // One node of 8 placeable vCPUs with 6 allocated: 25% free, below 30%.
    assert.equal(decide(over, [node('a', { cpuCount: 2, cpuAllocated: 6 })], calm, {}, NOW).action, 'scale_out');
    assert.throws(() => parseAutoscalerConfig({ minNodes: 1, maxNodes: 2, cpuOvercommit: 0.5 }), /cpuOvercommit/);
  });

  test('limits hold: never below minNodes nor above maxNodes, whatever the load', () => {
    assert.deepEqual(decide(config, [], calm, {}, NOW), { action: 'scale_out', count: 1, reason: '0 node(s) in service, below minNodes 1' });
    const c2 = parseAutoscalerConfig({ minNodes: 2, maxNodes: 2, scaleInFreeFraction: 0.9 });
    assert.equal(decide(c2, [node('a'), node('b')], calm, {}, NOW).action, 'none', 'idle, but at minNodes');
    const full = [node('a', { cpuAllocated: 8 }), node('b', { cpuAllocated: 8 }), node('c', { cpuAllocated: 8 })];
    const d = decide(config, full, { failedCreates: 5 }, {}, NOW);
    assert.equal(d.action, 'none');
    assert.match(d.reason, /already at maxNodes 3/);
    const over = [node('a'), node('b'), node('c'), node('d', { sandboxCount: 0 })];
    assert.equal(decide(config, over, calm, { lastScaleInAt: NOW }, NOW).action, 'scale_in', 'above maxNodes: scale in even within the cooldown');
    // An unhealthy node still counts against maxNodes (it may come back); a draining one is already leaving.
    assert.equal(decide(config, [node('a', { cpuAllocated: 8 }), node('b', { status: 'unhealthy' }), node('c', { cpuAllocated: 8 })], calm, {}, NOW).action, 'none');
  });

  test('cooldowns hold: no second scale out within scaleOutCooldownMs, no scale in within scaleInCooldownMs of any scaling', () => {
    const busy = [node('a', { cpuAllocated: 8 })];
    const d = decide(config, busy, calm, { lastScaleOutAt: NOW - 30_000 }, NOW);
    assert.equal(d.action, 'none');
    assert.match(d.reason, /scale-out cooldown \(30 s left\)/);
    assert.equal(decide(config, busy, calm, { lastScaleOutAt: NOW - 60_000 }, NOW).action, 'scale_out');
    const idle = [node('a'), node('b')];
    assert.equal(decide(config, idle, calm, { lastScaleOutAt: NOW - 100_000 }, NOW).action, 'none', 'a node just added is not removed at once');
    assert.equal(decide(config, idle, calm, { lastScaleInAt: NOW - 299_000 }, NOW).action, 'none');
    assert.equal(decide(config, idle, calm, { lastScaleInAt: NOW - 300_000 }, NOW).action, 'scale_in');
  });

  test('one scale in at a time: while a node drains nothing else is removed', () => {
    const d = decide(config, [node('a'), node('b'), node('c', { status: 'draining' })], calm, {}, NOW);
    assert.equal(d.action, 'none');
    assert.match(d.reason, /node c is draining/);
  });

  test('bad configurations are refused with every problem named', () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ minNodes: 3, maxNodes: 2 }, /minNodes: must not exceed maxNodes \(3 > 2\)/],
      [{ minNodes: 0, maxNodes: 2 }, /minNodes: must be at least 1: a cluster with zero nodes/],
      [{ minNodes: 1, maxNodes: 0 }, /maxNodes: must be at least 1/],
      [{ minNodes: -1, maxNodes: 2 }, /minNodes/],
      [{ minNodes: 1, maxNodes: 2, scaleOutCooldownMs: -5 }, /scaleOutCooldownMs/],
      [{ minNodes: 1, maxNodes: 2, targetFreeFraction: 1.5 }, /targetFreeFraction/],
      [{ minNodes: 1, maxNodes: 2, targetFreeFraction: 0.5, scaleInFreeFraction: 0.4 }, /scaleInFreeFraction: must be above targetFreeFraction/],
      [{ minNodes: 1.5, maxNodes: 2 }, /minNodes/],
      [{ minNodes: 1, maxNodes: 2, surprise: true }, /Unrecognized key/],
      [null, /config/],
    ];
    for (const [raw, re] of bad) {
      assert.throws(() => parseAutoscalerConfig(raw), (err: unknown) => err instanceof AutoscalerConfigError && err.code === 'invalid_autoscaler_config' && re.test(err.message), JSON.stringify(raw));
    }
    const e = (() => { try { parseAutoscalerConfig({ minNodes: 0, maxNodes: -1 }); } catch (err) { return err as AutoscalerConfigError; } })()!;
    assert.ok(e.issues.some((i) => i.startsWith('minNodes')) && e.issues.some((i) => i.startsWith('maxNodes')), `both problems at once: ${e.message}`);
  });

  test('creates refused for capacity scale out on a cluster whose nodes look idle, but not twice for the same failures', () => {
    const idle = [node('a'), node('b')];
    // Idle by load (would even scale in), yet creates failed: the nodes' usage cannot show a create placed nowhere.
    assert.equal(decide(config, idle, calm, {}, NOW).action, 'scale_in');
    const failed = { failedCreates: 4, lastFailedCreateAt: NOW - 1_000 };
    assert.deepEqual(decide(config, idle, failed, {}, NOW), { action: 'scale_out', count: 1, reason: '4 create(s) failed for lack of capacity' });
    // The same failures after a scale out that came after them (and its cooldown): answered, no second node.
    const later = NOW + 120_000;
    assert.notEqual(decide(config, idle, failed, { lastScaleOutAt: NOW }, later).action, 'scale_out');
    // A failure after that scale out: the new node was not enough, scale out again.
    assert.equal(decide(config, idle, { ...failed, lastFailedCreateAt: NOW + 5_000 }, { lastScaleOutAt: NOW }, later).action, 'scale_out');
    // Cooldown and maxNodes still hold against a flood of failures.
    assert.equal(decide(config, idle, { ...failed, failedCreates: 10_000, lastFailedCreateAt: NOW }, { lastScaleOutAt: NOW - 1_000 }, NOW).action, 'none');
    assert.equal(decide(config, [...idle, node('c')], { ...failed, failedCreates: 10_000 }, {}, NOW).action, 'none');
  });

  test('the control plane counts capacity misses per cluster in a window, bounded however many creates fail', () => {
    const m = new CapacityMisses(60_000, 100);
    assert.deepEqual(m.view('c1', NOW), { failedCreates: 0, lastFailedCreateAt: null, windowSeconds: 60 });
    m.record('c1', NOW - 90_000); // outside the window by the time it is read
    m.record('c1', NOW - 30_000);
    m.record('c1', NOW - 10_000);
    m.record('c2', NOW - 5_000);
    assert.deepEqual(m.view('c1', NOW), { failedCreates: 2, lastFailedCreateAt: NOW - 10_000, windowSeconds: 60 });
    assert.equal(m.view('c2', NOW).failedCreates, 1, 'clusters are counted apart');
    assert.equal(m.view('c1', NOW + 60_000).failedCreates, 0, 'the window passes');
    // A tenant looping on creates that fit nowhere: the count saturates at the bound instead of growing memory.
    for (let i = 0; i < 100_000; i++) m.record('c3', NOW + i / 1000);
    assert.deepEqual(m.view('c3', NOW + 100), { failedCreates: 100, lastFailedCreateAt: NOW + 99.999, windowSeconds: 60 });
  });
});
