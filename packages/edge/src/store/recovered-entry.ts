// The catalog entry a heartbeat implies for a sandbox the node reports. Shared by both stores so they
// cannot disagree on when a route is trusted.

import type { CatalogEntry } from './edge-store.js';

/**
 * The entry to write for `sandboxId` reported by `nodeId`, or undefined when the current one stands.
 * `traffic` is the node's traffic-token hash for it ('' = public; absent = the node does not know).
 */
export function entryFromHeartbeat(
  prior: CatalogEntry | undefined,
  nodeId: string,
  traffic: string | undefined,
  now: number,
): CatalogEntry | undefined {
  const known = traffic !== undefined;
  if (prior?.nodeId === nodeId && !(prior.recovered && known)) return undefined;
  if (known) return { nodeId, trafficTokenHash: traffic === '' ? undefined : traffic, createdAt: prior?.nodeId === nodeId ? prior.createdAt : now };
  return { nodeId, trafficTokenHash: prior?.trafficTokenHash, recovered: prior ? prior.recovered : true, createdAt: now };
}
