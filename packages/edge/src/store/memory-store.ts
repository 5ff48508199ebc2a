// The in-process EdgeStore for a single edge (`cove up`). Node rows expire lazily on read.

import type { CatalogEntry, EdgeStore, NodeRecord, PausedEntry, ReconcileResult } from './edge-store.js';
import { entryFromHeartbeat } from './recovered-entry.js';

/** Paused-sandbox entries kept in memory (about 200 bytes each). */
const MAX_PAUSED = 100_000;

/** Told every change of a catalog row or node row, synchronously and in order (the HAProxy route maps). */
export interface CatalogObserver {
  sandboxChanged(sandboxId: string, entry: CatalogEntry | undefined): void;
  nodeChanged(nodeId: string, record: NodeRecord | undefined): void;
}

/** Every catalog row and live node row at one moment. */
export interface CatalogSnapshot {
  sandboxes: [string, CatalogEntry][];
  nodes: NodeRecord[];
}

/** EdgeStore held in Maps; `now` is injectable only so expiry has one clock with the registry. */
export class MemoryStore implements EdgeStore {
  private observer: CatalogObserver | undefined;
  private readonly sandboxes = new Map<string, CatalogEntry>();
  private readonly byNode = new Map<string, Set<string>>();
  private readonly nodes = new Map<string, { record: NodeRecord; expiresAt: number }>();
  /** Insertion order = pause order, so the oldest go first once the bound is reached. */
  private readonly paused = new Map<string, PausedEntry>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Report every later change to `observer` (one at a time). */
  observe(observer: CatalogObserver): void {
    this.observer = observer;
  }

  snapshot(): CatalogSnapshot {
    const nodes: NodeRecord[] = [];
    for (const [id, row] of [...this.nodes]) {
      if (row.expiresAt <= this.now()) this.forget(id);
      else nodes.push(row.record);
    }
    return { sandboxes: [...this.sandboxes], nodes };
  }

  async getSandbox(sandboxId: string): Promise<CatalogEntry | undefined> {
    return this.sandboxes.get(sandboxId);
  }

  async putSandbox(sandboxId: string, entry: CatalogEntry): Promise<void> {
    const prior = this.sandboxes.get(sandboxId);
    if (prior) this.byNode.get(prior.nodeId)?.delete(sandboxId);
    this.sandboxes.set(sandboxId, entry);
    this.nodeSet(entry.nodeId).add(sandboxId);
    this.observer?.sandboxChanged(sandboxId, entry);
  }

  async deleteSandbox(sandboxId: string, nodeId?: string): Promise<void> {
    const prior = this.sandboxes.get(sandboxId);
    if (!prior || (nodeId !== undefined && prior.nodeId !== nodeId)) return;
    this.sandboxes.delete(sandboxId);
    this.byNode.get(prior.nodeId)?.delete(sandboxId);
    this.observer?.sandboxChanged(sandboxId, undefined);
  }

  async reconcileNode(
    nodeId: string,
    sandboxIds: readonly string[],
    now: number,
    graceMs: number,
    traffic: ReadonlyMap<string, string> = new Map(),
    otherNodes: ReadonlySet<string> = new Set(),
  ): Promise<ReconcileResult> {
    const reported = new Set(sandboxIds);
    let added = 0;
    let removed = 0;
    for (const id of reported) {
      const entry = entryFromHeartbeat(this.sandboxes.get(id), nodeId, traffic.get(id), now, otherNodes);
      if (!entry) continue;
      await this.putSandbox(id, entry);
      added++;
    }
    for (const id of [...this.nodeSet(nodeId)]) {
      const entry = this.sandboxes.get(id);
      if (reported.has(id) || !entry || now - entry.createdAt < graceMs) continue;
      await this.deleteSandbox(id, nodeId);
      removed++;
    }
    return { added, removed };
  }

  async countSandboxes(nodeId: string): Promise<number> {
    return this.byNode.get(nodeId)?.size ?? 0;
  }

  async putPaused(sandboxId: string, entry: PausedEntry): Promise<void> {
    this.paused.delete(sandboxId);
    this.paused.set(sandboxId, entry);
    if (this.paused.size > MAX_PAUSED) this.paused.delete(this.paused.keys().next().value as string);
  }

  async getPaused(sandboxId: string): Promise<PausedEntry | undefined> {
    return this.paused.get(sandboxId);
  }

  async deletePaused(sandboxId: string): Promise<void> {
    this.paused.delete(sandboxId);
  }

  async putNode(record: NodeRecord, ttlMs: number): Promise<void> {
    this.nodes.set(record.nodeId, { record, expiresAt: this.now() + ttlMs });
    this.observer?.nodeChanged(record.nodeId, record);
  }

  async getNode(nodeId: string): Promise<NodeRecord | undefined> {
    const row = this.nodes.get(nodeId);
    if (!row) return undefined;
    if (row.expiresAt <= this.now()) {
      this.forget(nodeId);
      return undefined;
    }
    return row.record;
  }

  async listNodes(): Promise<NodeRecord[]> {
    const out: NodeRecord[] = [];
    for (const id of [...this.nodes.keys()]) {
      const rec = await this.getNode(id);
      if (rec) out.push(rec);
    }
    return out;
  }

  async close(): Promise<void> {}

  /** A forgotten node takes its catalog entries with it: nothing could route to them any more. */
  private forget(nodeId: string): void {
    this.nodes.delete(nodeId);
    this.observer?.nodeChanged(nodeId, undefined);
    for (const id of this.byNode.get(nodeId) ?? []) {
      this.sandboxes.delete(id);
      this.observer?.sandboxChanged(id, undefined);
    }
    this.byNode.delete(nodeId);
  }

  private nodeSet(nodeId: string): Set<string> {
    let set = this.byNode.get(nodeId);
    if (!set) this.byNode.set(nodeId, (set = new Set()));
    return set;
  }
}
