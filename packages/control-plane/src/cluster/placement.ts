// Placement: which of a cluster's nodes should run a new sandbox. A pure function over the nodes' InfoResponse
// (the orchestrator contract), so it is tested without any server.
//
// A node is a candidate when the edge and the node both call it healthy, it is under its sandbox cap, and the
// request fits in its free CPU, memory *and* disk (allocated vs capacity, each scaled by an overcommit factor).
// Disk has a second, physical floor: a sandbox's disk is a sparse file that may grow to its full size, so the
// node's filesystem must have that much actually free now (a full host filesystem fails every sandbox on it).
// A node reporting no disk capacity (an older orchestrator) is judged on CPU and memory alone.
// Candidates are ordered by the free share left on their tightest resource after placing the request, so
// sandboxes spread over nodes instead of filling one; ties go to the node with fewer sandboxes, then by id. A create
// also counts the creates already sent but not yet in the heartbeats (PendingPlacements), and prefers a node that
// still has a warm slot of its built-in template.

import { NodeStatus, type InfoResponse } from '@cove/contracts/orchestrator';
import { NoCapacity, TemplateNotReady } from '../errors.js';

export interface NodeView {
  nodeId: string;
  /** The edge's view of the node (`healthy`, `draining`, `unhealthy`, …). */
  edgeStatus: string;
  info: InfoResponse | undefined;
}

export interface PlacementRequest {
  cpuCount: number;
  memoryMb: number;
  /** The sandbox's (or build's) disk size. */
  diskMb: number;
}

export interface PlacementOptions {
  cpuOvercommit: number;
  memoryOvercommit: number;
  /** Disk placement may hand out per byte of a node's disk (sandbox disks are sparse; 1 = none). */
  diskOvercommit: number;
}

export interface Candidate {
  nodeId: string;
  score: number;
}

const MIB = 1024 * 1024;
const EDGE_OK = new Set(['healthy', 'ready']);

/** What this process has sent to one node and that node's heartbeat may not show yet. */
interface Pending {
  count: number;
  cpu: number;
  memoryMb: number;
  diskMb: number;
  /** Warm-pool claims, by the node's template id. */
  warm: Map<string, number>;
}

/**
 * Creates this control plane has placed that the nodes' last heartbeats (every 2 s) may not count yet. A burst of
 * creates arrives within one heartbeat, so every create of it saw the same node ranked first: all of them went
 * there, emptied its warm pool and queued fresh boots behind its refill while the other nodes' pools sat full (the
 * cause of most of a 20-create burst's p95, docs/performance.md). Ranking counts these as placed, so a burst
 * spreads over the nodes and their warm slots. They rank only: whether a node can take a sandbox at all is still
 * judged on what it reported, so a stale count never refuses a create.
 */
export class PendingPlacements {
  private readonly byNode = new Map<string, Pending>();

  /** Counts a create sent to `nodeId` (a claim of `warmTemplateId`'s pool, if given); call the result once it is answered. */
  add(nodeId: string, req: PlacementRequest, warmTemplateId?: string): () => void {
    const p = this.byNode.get(nodeId) ?? { count: 0, cpu: 0, memoryMb: 0, diskMb: 0, warm: new Map<string, number>() };
    this.byNode.set(nodeId, p);
    const step = (sign: 1 | -1) => {
      p.count += sign;
      p.cpu += sign * req.cpuCount;
      p.memoryMb += sign * req.memoryMb;
      p.diskMb += sign * req.diskMb;
      if (warmTemplateId) p.warm.set(warmTemplateId, (p.warm.get(warmTemplateId) ?? 0) + sign);
    };
    step(1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      step(-1);
      if (p.count === 0) this.byNode.delete(nodeId);
    };
  }

  /** Of `nodeId`: the pending creates and, of `templateId`'s warm pool, the pending claims. */
  of(nodeId: string, templateId?: string): { count: number; cpu: number; memoryMb: number; diskMb: number; warm: number } {
    const p = this.byNode.get(nodeId);
    return { count: p?.count ?? 0, cpu: p?.cpu ?? 0, memoryMb: p?.memoryMb ?? 0, diskMb: p?.diskMb ?? 0, warm: (templateId && p?.warm.get(templateId)) || 0 };
  }
}

/** Warm slots of `templateId` a node reported ready, less the claims already sent to it. */
function warmLeft(info: InfoResponse, pending: { warm: number }, templateId: string | undefined): number {
  if (!templateId) return 0;
  const ready = info.warmPools.find((w) => w.templateId === templateId)?.ready ?? 0;
  return Math.max(0, ready - pending.warm);
}

/**
 * Candidate nodes, best first; empty when no node can take the sandbox. With `pending` (creates placed but maybe
 * not yet in the heartbeats) and the built-in `warmTemplateId` the create claims from, nodes that still have a
 * warm slot for it come first, and the free shares count the pending creates as placed.
 */
export function rankNodes(nodes: readonly NodeView[], req: PlacementRequest, opts: PlacementOptions, pending?: PendingPlacements, warmTemplateId?: string): Candidate[] {
  const ranked: Array<Candidate & { sandboxes: number; warm: number }> = [];
  for (const n of nodes) {
    const info = n.info;
    if (!info || !EDGE_OK.has(n.edgeStatus.toLowerCase()) || info.status !== NodeStatus.HEALTHY) continue;
    const cap = info.capacity;
    const use = info.usage;
    if (!cap || cap.cpuCount <= 0 || cap.memoryBytes <= 0n) continue;
    if (cap.maxSandboxes > 0 && info.sandboxCount >= cap.maxSandboxes) continue;
    // A sandbox never gets more vCPUs or memory than the machine has, whatever the overcommit.
    if (req.cpuCount > cap.cpuCount || BigInt(req.memoryMb) * BigInt(MIB) > cap.memoryBytes) continue;
    const cpuTotal = cap.cpuCount * opts.cpuOvercommit;
    const memTotal = (Number(cap.memoryBytes) / MIB) * opts.memoryOvercommit;
    const cpuFree = cpuTotal - (use?.cpuAllocated ?? 0) - req.cpuCount;
    const memFree = memTotal - Number(use?.memoryAllocatedBytes ?? 0n) / MIB - req.memoryMb;
    if (cpuFree < 0 || memFree < 0) continue;
    const p = pending?.of(n.nodeId, warmTemplateId) ?? { count: 0, cpu: 0, memoryMb: 0, diskMb: 0, warm: 0 };
    let score = Math.min((cpuFree - p.cpu) / cpuTotal, (memFree - p.memoryMb) / memTotal);
    const diskMb = Number(cap.diskBytes) / MIB;
    if (diskMb > 0) {
      const physicalFree = diskMb - Number(use?.diskUsedBytes ?? 0n) / MIB - req.diskMb;
      const diskTotal = diskMb * opts.diskOvercommit;
      const diskFree = diskTotal - Number(use?.diskAllocatedBytes ?? 0n) / MIB - req.diskMb;
      if (physicalFree < 0 || diskFree < 0) continue;
      score = Math.min(score, (diskFree - p.diskMb) / diskTotal, (physicalFree - p.diskMb) / diskMb);
    }
    ranked.push({ nodeId: n.nodeId, score, sandboxes: info.sandboxCount + p.count, warm: warmLeft(info, p, warmTemplateId) });
  }
  // A warm slot first (a claim is ~10× faster than a boot, and a boot competes with every other for the cores).
  ranked.sort((a, b) => Number(b.warm > 0) - Number(a.warm > 0) || b.score - a.score || a.sandboxes - b.sandboxes || a.nodeId.localeCompare(b.nodeId));
  return ranked.map(({ nodeId, score }) => ({ nodeId, score }));
}

/**
 * The nodes that can start sandboxes (or builds) of built-in template `templateId` now: those listing it among
 * their ready templates, and those that report none at all (an orchestrator from before ready templates were
 * reported answers for itself). A node that lists others but not this one is still building it in the
 * background, or cannot offer it: placing there would only fail.
 */
export function readyFor(nodes: readonly NodeView[], templateId: string): NodeView[] {
  return nodes.filter((n) => {
    const ready = n.info?.readyTemplates ?? [];
    return ready.length === 0 || ready.includes(templateId);
  });
}

/**
 * Candidates for a sandbox or build, best first; for one of built-in template `builtIn` only the nodes that have it
 * ready. Throws TemplateNotReady when nodes could take it but none has the template ready yet, else NoCapacity
 * when none can take it.
 */
export function placeOn(nodes: readonly NodeView[], req: PlacementRequest, opts: PlacementOptions, builtIn?: { templateId: string; ref: string }, pending?: PendingPlacements): Candidate[] {
  // Warm slots matter to a create only (the one caller that passes `pending`): a resume or fork restores a snapshot.
  const candidates = rankNodes(builtIn ? readyFor(nodes, builtIn.templateId) : nodes, req, opts, pending, pending ? builtIn?.templateId : undefined);
  if (candidates.length > 0) return candidates;
  if (builtIn && rankNodes(nodes, req, opts).length > 0) throw new TemplateNotReady(builtIn.ref);
  throw new NoCapacity();
}

/**
 * Nodes that can answer a call that places nothing (build status, artifact deletion): the edge and the node
 * call them healthy or draining, whatever their load. Healthy ones first, then by id.
 */
export function answeringNodes(nodes: readonly NodeView[]): string[] {
  return nodes
    .filter((n) => n.info && EDGE_OK.has(n.edgeStatus.toLowerCase()) && (n.info.status === NodeStatus.HEALTHY || n.info.status === NodeStatus.DRAINING))
    .sort((a, b) => Number(b.info!.status === NodeStatus.HEALTHY) - Number(a.info!.status === NodeStatus.HEALTHY) || a.nodeId.localeCompare(b.nodeId))
    .map((n) => n.nodeId);
}
