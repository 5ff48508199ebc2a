// Placement: which of a cluster's nodes should run a new sandbox. A pure function over the nodes' InfoResponse
// (the orchestrator contract), so it is tested without any server.
//
// A node is a candidate when the edge and the node both call it healthy, it is under its sandbox cap, and the
// request fits in its free CPU, memory *and* disk (allocated vs capacity, each scaled by an overcommit factor).
// Disk has a second, physical floor: a sandbox's disk is a sparse file that may grow to its full size, so the
// node's filesystem must have that much actually free now (a full host filesystem fails every sandbox on it).
// A node reporting no disk capacity (an older orchestrator) is judged on CPU and memory alone.
// Candidates are ordered by the free share left on their tightest resource after placing the request, so
// sandboxes spread over nodes instead of filling one; ties go to the node with fewer sandboxes, then by id.

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

/** Candidate nodes, best first; empty when no node can take the sandbox. */
export function rankNodes(nodes: readonly NodeView[], req: PlacementRequest, opts: PlacementOptions): Candidate[] {
  const ranked: Array<Candidate & { sandboxes: number }> = [];
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
    let score = Math.min(cpuFree / cpuTotal, memFree / memTotal);
    const diskMb = Number(cap.diskBytes) / MIB;
    if (diskMb > 0) {
      const physicalFree = diskMb - Number(use?.diskUsedBytes ?? 0n) / MIB - req.diskMb;
      const diskTotal = diskMb * opts.diskOvercommit;
      const diskFree = diskTotal - Number(use?.diskAllocatedBytes ?? 0n) / MIB - req.diskMb;
      if (physicalFree < 0 || diskFree < 0) continue;
      score = Math.min(score, diskFree / diskTotal, physicalFree / diskMb);
    }
    ranked.push({ nodeId: n.nodeId, score, sandboxes: info.sandboxCount });
  }
  ranked.sort((a, b) => b.score - a.score || a.sandboxes - b.sandboxes || a.nodeId.localeCompare(b.nodeId));
  return ranked.map(({ nodeId, score }) => ({ nodeId, score }));
}

/**
 * The candidates with a warm slot of `templateId` left first, most slots left first (ties in rank order), then the
 * rest in rank order. A node reported its ready slots up to a heartbeat ago; `placedSince` is the sandboxes placed
 * on it since, which may have taken them. So a burst is spread over the pools rather than emptying one: a pool that
 * keeps slots refills after the burst, an emptied one at once, into the burst's first commands (docs/decisions.md,
 * "A burst is spread over the warm pools"); and no create boots a slot while another node has one waiting (seconds
 * under load, where a claim takes milliseconds).
 */
export function preferWarm(candidates: readonly Candidate[], nodes: readonly NodeView[], templateId: string, placedSince: (nodeId: string) => number): Candidate[] {
  const left = new Map(nodes.map((n) => [n.nodeId, (n.info?.warmPools.find((p) => p.templateId === templateId)?.ready ?? 0) - placedSince(n.nodeId)]));
  const slotsLeft = (c: Candidate) => left.get(c.nodeId) ?? 0;
  const warm = candidates.filter((c) => slotsLeft(c) > 0).sort((a, b) => slotsLeft(b) - slotsLeft(a));
  return [...warm, ...candidates.filter((c) => slotsLeft(c) <= 0)];
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
export function placeOn(nodes: readonly NodeView[], req: PlacementRequest, opts: PlacementOptions, builtIn?: { templateId: string; ref: string }): Candidate[] {
  const candidates = rankNodes(builtIn ? readyFor(nodes, builtIn.templateId) : nodes, req, opts);
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
