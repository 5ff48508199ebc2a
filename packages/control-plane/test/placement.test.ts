// Placement as a pure function over node infos.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { InfoResponseSchema, NodeStatus } from '@cove/contracts/orchestrator';
import { answeringNodes, preferWarm, rankNodes, type NodeView } from '../src/cluster/placement.js';
import { RecentPlacements } from '../src/cluster/recent-placements.js';

const GiB = 1n << 30n;
const opts = { cpuOvercommit: 1, memoryOvercommit: 1, diskOvercommit: 1 };

const mib = (gib = 0) => BigInt(Math.round(gib * 1024)) * (1n << 20n);

function node(
  nodeId: string,
  o: {
    cpu?: number;
    memGiB?: bigint;
    cpuAlloc?: number;
    memAllocGiB?: number;
    diskGiB?: bigint;
    diskUsedGiB?: number;
    diskAllocGiB?: number;
    status?: NodeStatus;
    edge?: string;
    count?: number;
    max?: number;
  } = {},
): NodeView {
  return {
    nodeId,
    edgeStatus: o.edge ?? 'healthy',
    info: create(InfoResponseSchema, {
      nodeId,
      status: o.status ?? NodeStatus.HEALTHY,
      capacity: { cpuCount: o.cpu ?? 8, memoryBytes: (o.memGiB ?? 16n) * GiB, diskBytes: (o.diskGiB ?? 100n) * GiB, maxSandboxes: o.max ?? 0 },
      usage: {
        cpuAllocated: o.cpuAlloc ?? 0,
        memoryAllocatedBytes: mib(o.memAllocGiB),
        diskUsedBytes: mib(o.diskUsedGiB),
        diskAllocatedBytes: mib(o.diskAllocGiB),
      },
      sandboxCount: o.count ?? 0,
    }),
  };
}

const req = { cpuCount: 2, memoryMb: 512, diskMb: 1024 };

test('prefers the node with the most free share on its tighter resource', () => {
  const r = rankNodes([node('busy-cpu', { cpuAlloc: 6 }), node('busy-mem', { memAllocGiB: 15.75 }), node('idle')], req, opts);
  assert.deepEqual(r.map((c) => c.nodeId), ['idle', 'busy-cpu']);
});

test('memory counts as much as CPU: a CPU-idle node with no memory left is excluded', () => {
  const r = rankNodes([node('no-mem', { memGiB: 1n, memAllocGiB: 0.75 }), node('ok', { cpuAlloc: 4 })], req, opts);
  assert.deepEqual(r.map((c) => c.nodeId), ['ok']);
});

test('excludes draining, unhealthy, edge-unhealthy, full and info-less nodes', () => {
  const nodes: NodeView[] = [
    node('draining', { status: NodeStatus.DRAINING }),
    node('unhealthy', { status: NodeStatus.UNHEALTHY }),
    node('edge-draining', { edge: 'draining' }),
    node('capped', { count: 3, max: 3 }),
    node('cpu-full', { cpuAlloc: 7 }),
    node('too-small', { cpu: 1 }),
    { nodeId: 'no-info', edgeStatus: 'healthy', info: undefined },
  ];
  assert.deepEqual(rankNodes(nodes, req, opts), []);
});

test('overcommit lets more vCPUs out than cores, never more per sandbox than the machine has', () => {
  const full = node('n', { cpu: 4, cpuAlloc: 4 });
  assert.deepEqual(rankNodes([full], req, opts), []);
  assert.deepEqual(rankNodes([full], req, { cpuOvercommit: 2, memoryOvercommit: 1, diskOvercommit: 1 }).map((c) => c.nodeId), ['n']);
  assert.deepEqual(rankNodes([node('small', { cpu: 1 })], req, { cpuOvercommit: 8, memoryOvercommit: 1, diskOvercommit: 1 }), []);
});

test('disk counts like CPU and memory: allocated disk (with its overcommit) and the filesystem actually free', () => {
  const big = { ...req, diskMb: 20 * 1024 };
  // Disk allocated to sandboxes: 90 of 100 GiB, so a 20 GiB disk does not fit without overcommit.
  const allocatedFull = node('alloc-full', { diskAllocGiB: 90 });
  assert.deepEqual(rankNodes([allocatedFull], big, opts), []);
  assert.deepEqual(rankNodes([allocatedFull], big, { ...opts, diskOvercommit: 2 }).map((c) => c.nodeId), ['alloc-full']);
  // The filesystem holds 95 GiB already (images, snapshots, other data): no overcommit makes room that is not there.
  const physicallyFull = node('fs-full', { diskUsedGiB: 95 });
  assert.deepEqual(rankNodes([physicallyFull], big, { ...opts, diskOvercommit: 100 }), []);
  assert.deepEqual(rankNodes([physicallyFull], req, opts).map((c) => c.nodeId), ['fs-full'], 'a small disk still fits');
  // Among nodes idle on CPU and memory, the one with more disk left wins.
  const r = rankNodes([node('fuller', { diskUsedGiB: 60 }), node('emptier', { diskUsedGiB: 10 }), node('mid', { diskAllocGiB: 40 })], req, opts);
  assert.deepEqual(r.map((c) => c.nodeId), ['emptier', 'mid', 'fuller']);
  // A node reporting no disk (an older orchestrator) is judged on CPU and memory alone.
  assert.deepEqual(rankNodes([node('no-disk-figures', { diskGiB: 0n })], big, opts).map((c) => c.nodeId), ['no-disk-figures']);
});

test('ties spread by sandbox count, then node id', () => {
  const r = rankNodes([node('b', { count: 1 }), node('a', { count: 1 }), node('c', { count: 0 })], { cpuCount: 0, memoryMb: 0, diskMb: 0 }, opts);
  assert.deepEqual(r.map((c) => c.nodeId), ['c', 'a', 'b']);
});

test('nodes that can answer build status or deletion: healthy or draining, full or not; healthy first', () => {
  const r = answeringNodes([
    node('b-draining', { status: NodeStatus.DRAINING }),
    node('a-full', { count: 4, max: 4, cpuAlloc: 8 }),
    node('c-sick', { status: NodeStatus.UNHEALTHY }),
    node('d-edge-lost', { edge: 'unhealthy' }),
    { nodeId: 'e-no-info', edgeStatus: 'healthy', info: undefined },
  ]);
  assert.deepEqual(r, ['a-full', 'b-draining']);
});

const withWarm = (id: string, ready: number): NodeView => {
  const n = node(id);
  n.info!.warmPools = [{ $typeName: 'cove.orchestrator.v1.WarmPoolInfo', templateId: 'base', ready, target: 5 }];
  return n;
};

test('preferWarm: nodes with a warm slot left first, most left first, the rest in rank order; placed since the report count', () => {
  const nodes = [withWarm('a', 2), withWarm('b', 0), withWarm('c', 3), node('d')];
  const ranked = ['a', 'b', 'c', 'd'].map((nodeId, i) => ({ nodeId, score: 1 - i / 10 }));
  const order = (placed: Record<string, number>, templateId = 'base') => preferWarm(ranked, nodes, templateId, (id) => placed[id] ?? 0).map((c) => c.nodeId);
  assert.deepEqual(order({}), ['c', 'a', 'b', 'd']);
  assert.deepEqual(order({ c: 1 }), ['a', 'c', 'b', 'd'], 'as many left on both: rank order');
  // Both of a's slots taken since its report: c, which still has some, comes first.
  assert.deepEqual(order({ a: 2 }), ['c', 'a', 'b', 'd']);
  assert.deepEqual(order({ a: 2, c: 3 }), ['a', 'b', 'c', 'd'], 'no warm slot left anywhere: the rank as it was');
  assert.deepEqual(order({}, 'code-interpreter-v1'), ['a', 'b', 'c', 'd'], 'a template without pools: the rank as it was');
});

test('preferWarm spreads a burst over the pools instead of emptying the best node\'s', () => {
  const nodes = [withWarm('a', 20), withWarm('b', 20)];
  const ranked = [{ nodeId: 'a', score: 0.9 }, { nodeId: 'b', score: 0.8 }];
  const recent = new RecentPlacements(3000, () => 0);
  for (let i = 0; i < 20; i++) recent.add(preferWarm(ranked, nodes, 'base', (id) => recent.count(id, 'base'))[0]!.nodeId, 'base');
  assert.deepEqual([recent.count('a', 'base'), recent.count('b', 'base')], [10, 10]);
});

test('RecentPlacements counts a placement until the window has passed', () => {
  let now = 1_000;
  const recent = new RecentPlacements(3000, () => now);
  recent.add('a', 'base');
  recent.add('a', 'base');
  recent.add('a', 'other');
  now += 2000;
  recent.add('b', 'base');
  assert.deepEqual([recent.count('a', 'base'), recent.count('a', 'other'), recent.count('b', 'base')], [2, 1, 1]);
  now += 1001;
  assert.deepEqual([recent.count('a', 'base'), recent.count('b', 'base')], [0, 1]);
  recent.remove('b', 'base');
  recent.remove('b', 'base');
  assert.equal(recent.count('b', 'base'), 0, 'taken back, and never below none');
});
