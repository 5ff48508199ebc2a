// The autoscaler's policy (docs/operating.md, "Scaling and draining"): a pure function from what the cluster
// reports to one decision — add nodes, drain one node out, or nothing. No I/O, no clock of its own: the caller
// passes `now` and what it remembers (when it last scaled), so every rule is tested on plain data.
//
// Rules, in order:
// 1. Limits first: fewer in-service nodes than `minNodes` → scale out to it; more than `maxNodes` → scale in.
// 2. Pressure → scale out by one (while under `maxNodes`, once `scaleOutCooldownMs` passed since the last one):
//    creates that failed for lack of capacity (after the last scale out) or wait in a queue, free CPU or memory across healthy nodes below
//    the target headroom, or warm pools drained below `minWarmPoolFraction` of their targets.
// 3. Idleness → scale in by one (above `minNodes`, once `scaleInCooldownMs` passed since the last scale in *or*
//    out): if the cluster without its least-used node still has at least `scaleInFreeFraction` free on CPU and
//    memory. That threshold must be above the scale-out headroom, so a scale in never causes a scale out.
// A node already draining is the one scale in going on: nothing else is decided until it has left.

import { z } from 'zod';

export interface AutoscalerConfig {
  minNodes: number;
  maxNodes: number;
  /** Scale out when the free share of CPU (or memory) across healthy nodes falls below this (0–1). */
  targetFreeFraction: number;
  /** Scale in only when, without the node leaving, the free share stays at or above this (> targetFreeFraction). */
  scaleInFreeFraction: number;
  /** Scale out when warm pools hold less than this share of their targets (0 = ignore warm pools). */
  minWarmPoolFraction: number;
  scaleOutCooldownMs: number;
  scaleInCooldownMs: number;
  /**
   * vCPUs the nodes place per host CPU (their COVE_CPU_OVERCOMMIT): free CPU is measured against what placement
   * accepts, or a node that still takes sandboxes would count as full and block every scale in.
   */
  cpuOvercommit: number;
}

/** One node as the autoscaler sees it (from the edge's node list: the node's InfoResponse). */
export interface NodeLoad {
  nodeId: string;
  status: 'healthy' | 'draining' | 'unhealthy';
  cpuCount: number;
  cpuAllocated: number;
  memoryBytes: number;
  memoryAllocatedBytes: number;
  sandboxCount: number;
  /** Warm sandboxes ready now and the node's target, summed over templates. */
  warmPoolDepth: number;
  warmPoolTarget: number;
}

export interface Demand {
  /** Creates that failed with no_capacity recently (since the last decision, or within the control plane's window). */
  failedCreates: number;
  /**
   * When the latest of them failed (epoch ms). Failures that all came before the last scale out were that scale
   * out's reason: they do not ask for another node. Absent: every failure counts.
   */
  lastFailedCreateAt?: number | null;
}

/** What the caller remembers between decisions. */
export interface ScalingHistory {
  lastScaleOutAt?: number;
  lastScaleInAt?: number;
}

export type Decision =
  | { action: 'scale_out'; count: number; reason: string }
  | { action: 'scale_in'; nodeId: string; reason: string }
  | { action: 'none'; reason: string };

/** A configuration the autoscaler refuses, with every problem named. */
export class AutoscalerConfigError extends Error {
  readonly code = 'invalid_autoscaler_config';
  constructor(readonly issues: string[]) {
    super(`invalid autoscaler configuration: ${issues.join('; ')}`);
    this.name = 'AutoscalerConfigError';
  }
}

const fraction = z.number().min(0).max(1);
const count = z.number().int().min(0).max(10_000);
const ms = z.number().int().min(0).max(24 * 3_600_000);

const ConfigSchema = z
  .object({
    minNodes: count.refine((n) => n >= 1, 'must be at least 1: a cluster with zero nodes cannot run or move a sandbox'),
    maxNodes: count.refine((n) => n >= 1, 'must be at least 1'),
    targetFreeFraction: fraction.default(0.2),
    scaleInFreeFraction: fraction.default(0.5),
    minWarmPoolFraction: fraction.default(0),
    scaleOutCooldownMs: ms.default(60_000),
    scaleInCooldownMs: ms.default(600_000),
    cpuOvercommit: z.number().min(1).max(1024).default(1),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.minNodes > c.maxNodes) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['minNodes'], message: `must not exceed maxNodes (${c.minNodes} > ${c.maxNodes})` });
    if (c.scaleInFreeFraction <= c.targetFreeFraction) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['scaleInFreeFraction'], message: `must be above targetFreeFraction (${c.targetFreeFraction}), or a scale in would cause a scale out` });
    }
  });

/** Parses and checks a configuration; AutoscalerConfigError lists every problem. */
export function parseAutoscalerConfig(raw: unknown): AutoscalerConfig {
  const r = ConfigSchema.safeParse(raw);
  if (!r.success) throw new AutoscalerConfigError(r.error.issues.map((i) => `${i.path.join('.') || 'config'}: ${i.message}`));
  return r.data;
}

/** Free share of CPU (placeable vCPUs) and memory over `nodes`, with `allocated` of everything to place on them. */
function freeShare(nodes: readonly NodeLoad[], allocated: { cpu: number; mem: number }, cpuOvercommit: number): number {
  const cpu = nodes.reduce((s, n) => s + n.cpuCount, 0) * cpuOvercommit;
  const mem = nodes.reduce((s, n) => s + n.memoryBytes, 0);
  if (cpu <= 0 || mem <= 0) return 0;
  return Math.min((cpu - allocated.cpu) / cpu, (mem - allocated.mem) / mem);
}

const pct = (x: number) => `${Math.round(x * 100)}%`;

export function decide(config: AutoscalerConfig, nodes: readonly NodeLoad[], demand: Demand, history: ScalingHistory, now: number): Decision {
  const draining = nodes.filter((n) => n.status === 'draining');
  const inService = nodes.filter((n) => n.status !== 'draining');
  const healthy = nodes.filter((n) => n.status === 'healthy');
  const total = inService.length;

  if (total < config.minNodes) return { action: 'scale_out', count: config.minNodes - total, reason: `${total} node(s) in service, below minNodes ${config.minNodes}` };
  if (draining.length > 0) return { action: 'none', reason: `node ${draining.map((n) => n.nodeId).join(', ')} is draining; one scale in at a time` };
  const leastUsed = () =>
    [...inService].sort((a, b) => a.sandboxCount - b.sandboxCount || a.cpuAllocated - b.cpuAllocated || a.memoryAllocatedBytes - b.memoryAllocatedBytes || b.nodeId.localeCompare(a.nodeId))[0]!;
  if (total > config.maxNodes) {
    const n = leastUsed();
    return { action: 'scale_in', nodeId: n.nodeId, reason: `${total} node(s) in service, above maxNodes ${config.maxNodes}` };
  }

  const allocated = { cpu: healthy.reduce((s, n) => s + n.cpuAllocated, 0), mem: healthy.reduce((s, n) => s + n.memoryAllocatedBytes, 0) };
  const free = freeShare(healthy, allocated, config.cpuOvercommit);
  const warmTarget = healthy.reduce((s, n) => s + n.warmPoolTarget, 0);
  const warmDepth = healthy.reduce((s, n) => s + n.warmPoolDepth, 0);
  const pressure: string[] = [];
  const answered = demand.lastFailedCreateAt != null && history.lastScaleOutAt !== undefined && demand.lastFailedCreateAt <= history.lastScaleOutAt;
  if (demand.failedCreates > 0 && !answered) pressure.push(`${demand.failedCreates} create(s) failed for lack of capacity`);
  if (free < config.targetFreeFraction) pressure.push(`free capacity ${pct(free)} below the target headroom ${pct(config.targetFreeFraction)}`);
  if (config.minWarmPoolFraction > 0 && warmTarget > 0 && warmDepth / warmTarget < config.minWarmPoolFraction) {
    pressure.push(`warm pools at ${warmDepth}/${warmTarget}, below ${pct(config.minWarmPoolFraction)}`);
  }
  if (pressure.length > 0) {
    if (total >= config.maxNodes) return { action: 'none', reason: `${pressure.join('; ')}, but already at maxNodes ${config.maxNodes}` };
    const since = history.lastScaleOutAt === undefined ? Infinity : now - history.lastScaleOutAt;
    if (since < config.scaleOutCooldownMs) return { action: 'none', reason: `${pressure.join('; ')}; scale-out cooldown (${Math.ceil((config.scaleOutCooldownMs - since) / 1000)} s left)` };
    return { action: 'scale_out', count: 1, reason: pressure.join('; ') };
  }

  if (total <= config.minNodes) return { action: 'none', reason: `at minNodes ${config.minNodes}` };
  const last = Math.max(history.lastScaleInAt ?? -Infinity, history.lastScaleOutAt ?? -Infinity);
  if (now - last < config.scaleInCooldownMs) return { action: 'none', reason: `scale-in cooldown (${Math.ceil((config.scaleInCooldownMs - (now - last)) / 1000)} s left)` };
  const candidate = leastUsed();
  // Its sandboxes move to the others: the others must hold everything with the scale-in headroom to spare.
  const rest = healthy.filter((n) => n.nodeId !== candidate.nodeId);
  const everything = {
    cpu: allocated.cpu + (candidate.status === 'healthy' ? 0 : candidate.cpuAllocated),
    mem: allocated.mem + (candidate.status === 'healthy' ? 0 : candidate.memoryAllocatedBytes),
  };
  const after = freeShare(rest, everything, config.cpuOvercommit);
  if (rest.length === 0 || after < config.scaleInFreeFraction) return { action: 'none', reason: `free capacity without node ${candidate.nodeId} would be ${pct(after)}, below ${pct(config.scaleInFreeFraction)}` };
  return { action: 'scale_in', nodeId: candidate.nodeId, reason: `idle: without node ${candidate.nodeId} the cluster keeps ${pct(after)} free` };
}
