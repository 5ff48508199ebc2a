// The in-process store with HAProxy's route maps behind it: a catalog write returns only once HAProxy has
// applied the matching map edit (route-maps.ts). So a Pause, which takes the route away before it is
// forwarded to the node, is forwarded only when HAProxy no longer routes to the sandbox: the next request
// falls back to the Node edge and auto-resumes the sandbox as before.

import type { RouteMaps } from '../traffic/haproxy/route-maps.js';
import type { CatalogEntry, EdgeStore, NodeRecord, PausedEntry, ReconcileResult } from './edge-store.js';
import type { MemoryStore } from './memory-store.js';

export class RouteSyncedStore implements EdgeStore {
  constructor(
    private readonly inner: MemoryStore,
    private readonly routes: RouteMaps,
  ) {
    inner.observe(routes);
  }

  getSandbox(sandboxId: string): Promise<CatalogEntry | undefined> {
    return this.inner.getSandbox(sandboxId);
  }

  async putSandbox(sandboxId: string, entry: CatalogEntry): Promise<void> {
    await this.inner.putSandbox(sandboxId, entry);
    await this.routes.flush();
  }

  async deleteSandbox(sandboxId: string, nodeId?: string): Promise<void> {
    await this.inner.deleteSandbox(sandboxId, nodeId);
    await this.routes.flush();
  }

  async reconcileNode(...args: Parameters<EdgeStore['reconcileNode']>): Promise<ReconcileResult> {
    const result = await this.inner.reconcileNode(...args);
    await this.routes.flush();
    return result;
  }

  countSandboxes(nodeId: string): Promise<number> {
    return this.inner.countSandboxes(nodeId);
  }

  putPaused(sandboxId: string, entry: PausedEntry): Promise<void> {
    return this.inner.putPaused(sandboxId, entry);
  }

  getPaused(sandboxId: string): Promise<PausedEntry | undefined> {
    return this.inner.getPaused(sandboxId);
  }

  deletePaused(sandboxId: string): Promise<void> {
    return this.inner.deletePaused(sandboxId);
  }

  async putNode(record: NodeRecord, ttlMs: number): Promise<void> {
    await this.inner.putNode(record, ttlMs);
    await this.routes.flush();
  }

  getNode(nodeId: string): Promise<NodeRecord | undefined> {
    return this.inner.getNode(nodeId);
  }

  listNodes(): Promise<NodeRecord[]> {
    return this.inner.listNodes();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
