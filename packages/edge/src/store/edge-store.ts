// What the edge remembers: the sandbox catalog (sandbox → node, plus the hash of a private sandbox's
// traffic token) and the node registry (node → where to reach it, its last Info, when it last beat).
// In-process by default; Redis when several edges must share it (DESIGN.md §3). Both implement this.

import type { JsonValue } from '@bufbuild/protobuf';

/** One catalog row. */
export interface CatalogEntry {
  nodeId: string;
  /** sha256 (hex) of the sandbox's traffic token; absent for a public sandbox. */
  trafficTokenHash?: string;
  /** sha256 (hex) of its envd access token, read from the Create (control-link/create-tap.ts); absent = unknown. */
  envdTokenHash?: string;
  /**
   * Learnt from a heartbeat rather than from a control-link Create, so whether the sandbox is private is
   * unknown (an edge with the in-process store restarted): its non-envd ports fail closed.
   */
  recovered?: boolean;
  /** Its IPv4 address on the node, from the node's answer to the Create; absent = unknown (never routed to directly). */
  address?: string;
  /** Its requests carry a masked Host (E2B's maskRequestHost), which only the node proxy applies. */
  hostMasked?: boolean;
  /** When the edge first recorded it (ms since epoch); young entries survive a reconcile they missed. */
  createdAt: number;
}

/**
 * What the edge keeps of a private sandbox paused through its control link: the credentials that may wake it
 * through traffic (traffic/sandbox-router.ts). Written when the Pause takes the route away, dropped by the
 * Create that resumes it.
 */
export interface PausedEntry {
  /** sha256 (hex) of the traffic token: set, as only private sandboxes get an entry. */
  trafficTokenHash: string;
  /** sha256 (hex) of the envd access token, when the Create carried one the edge could read. */
  envdTokenHash?: string;
  pausedAt: number;
}

/** One node registry row, as written on every heartbeat. */
export interface NodeRecord {
  nodeId: string;
  rpcUrl: string;
  proxyUrl: string;
  /** The node's InfoResponse in protobuf JSON (toJson). */
  info: JsonValue;
  firstSeenAt: number;
  lastHeartbeatAt: number;
}

/** What a reconcile changed. */
export interface ReconcileResult {
  added: number;
  removed: number;
}

/** Persistence of the catalog and node registry. All methods are safe to call concurrently. */
export interface EdgeStore {
  getSandbox(sandboxId: string): Promise<CatalogEntry | undefined>;
  putSandbox(sandboxId: string, entry: CatalogEntry): Promise<void>;
  /** Remove a sandbox; with `nodeId`, only while it still points at that node (it may have moved). */
  deleteSandbox(sandboxId: string, nodeId?: string): Promise<void>;
  /**
   * Make the catalog agree with the ids a node reports: add missing ones (keeping any known traffic token),
   * drop this node's entries it no longer reports unless they are younger than `graceMs` (a Create the
   * heartbeat raced with). `traffic` maps sandbox id → traffic-token sha256 ('' = public) where the node
   * knows it; it settles entries that were only `recovered`. Entries routed to one of `otherNodes` (the other
   * nodes the edge knows) are left alone: a node reports its own sandboxes only.
   */
  reconcileNode(
    nodeId: string,
    sandboxIds: readonly string[],
    now: number,
    graceMs: number,
    traffic?: ReadonlyMap<string, string>,
    otherNodes?: ReadonlySet<string>,
  ): Promise<ReconcileResult>;
  /** Number of catalog entries pointing at `nodeId`. */
  countSandboxes(nodeId: string): Promise<number>;

  /** Remember a paused private sandbox's wake credentials (kept for a long time, but not forever). */
  putPaused(sandboxId: string, entry: PausedEntry): Promise<void>;
  getPaused(sandboxId: string): Promise<PausedEntry | undefined>;
  deletePaused(sandboxId: string): Promise<void>;

  /** Write a node row; it disappears by itself `ttlMs` after its last write. */
  putNode(record: NodeRecord, ttlMs: number): Promise<void>;
  getNode(nodeId: string): Promise<NodeRecord | undefined>;
  listNodes(): Promise<NodeRecord[]>;

  close(): Promise<void>;
}
