// The catalog entry a heartbeat implies for a sandbox the node reports. Shared by both stores so they
// cannot disagree on when a route is trusted. A heartbeat speaks for its own node only (docs/decisions.md,
// "Node credentials"): it never takes a sandbox the catalog routes to another node the edge still knows, and
// never changes a traffic-token hash the control link's Create wrote — it only settles an unknown one.

import type { CatalogEntry } from './edge-store.js';

/**
 * The entry to write for `sandboxId` reported by `nodeId`, or undefined when the current one stands.
 * `traffic` is the node's traffic-token hash for it ('' = public; absent = the node does not know).
 * `otherNodes` are the ids of the other nodes the edge knows: their routes are not the reporter's to take.
 */
export function entryFromHeartbeat(
  prior: CatalogEntry | undefined,
  nodeId: string,
  traffic: string | undefined,
  now: number,
  otherNodes: ReadonlySet<string> = new Set(),
): CatalogEntry | undefined {
  if (prior && prior.nodeId !== nodeId && otherNodes.has(prior.nodeId)) return undefined;
  const known = traffic !== undefined;
  if (prior?.nodeId === nodeId && !(prior.recovered && known)) return undefined;
  // A route the control link wrote (its node is gone): its privacy stays what Create said.
  if (prior && !prior.recovered) return { nodeId, trafficTokenHash: prior.trafficTokenHash, envdTokenHash: prior.envdTokenHash, createdAt: now };
  if (known) return { nodeId, trafficTokenHash: traffic === '' ? undefined : traffic, createdAt: prior?.nodeId === nodeId ? prior.createdAt : now };
  return { nodeId, trafficTokenHash: prior?.trafficTokenHash, recovered: true, createdAt: now };
}
