// HAProxy's two route maps, kept equal to the edge's catalog: sandbox id → node id for public, running
// (not `recovered`) sandboxes, and node id → `<ipv4>/<port>/<node token>` for nodes the registry knows. The
// files are rendered whole from the store at every HAProxy start; in between, each catalog change becomes a
// runtime API edit, and a store write is not done (RouteSyncedStore) until HAProxy has applied it. A failed
// edit restarts HAProxy, whose new maps come from the store again, so a route never outlives its entry.
//
// Safety: HAProxy sets E2b-Sandbox-Id/-Port from the parse it looked up and the node's own token, so a stale
// or wrong entry can only reach a node that does not run that sandbox and answers "not found".

import { isIP } from 'node:net';
import type { Logger } from 'pino';
import type { NodeCredentials } from '../../nodes/node-credentials.js';
import type { CatalogEntry, NodeRecord } from '../../store/edge-store.js';
import type { CatalogObserver, CatalogSnapshot } from '../../store/memory-store.js';
import { runtimeCommand } from './runtime-socket.js';

/** Ids safe as map keys and runtime API words (sandbox ids are `[a-z0-9]+`; node ids are checked here). */
const NODE_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
const SANDBOX_ID_RE = /^[a-z0-9]{1,128}$/;

/** Where HAProxy's maps live. */
export interface RouteMapPaths {
  socketPath: string;
  sandboxMapPath: string;
  nodeMapPath: string;
}

/** The node id HAProxy may route a sandbox to by itself, or undefined (the fallback decides). */
export function fastRouteOf(sandboxId: string, entry: CatalogEntry | undefined): string | undefined {
  if (!entry || entry.trafficTokenHash || entry.recovered) return undefined;
  return SANDBOX_ID_RE.test(sandboxId) && NODE_ID_RE.test(entry.nodeId) ? entry.nodeId : undefined;
}

/** `<ipv4>/<port>/<token>` for a node proxy at `http://<ipv4>:<port>`, else undefined (not routed by HAProxy). */
export function nodeTargetOf(nodeId: string, proxyUrl: string | undefined, credentials: NodeCredentials): string | undefined {
  if (!proxyUrl || !NODE_ID_RE.test(nodeId)) return undefined;
  let url: URL;
  try {
    url = new URL(proxyUrl);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' || isIP(url.hostname) !== 4 || url.port === '' || (url.pathname !== '/' && url.pathname !== '')) return undefined;
  return `${url.hostname}/${url.port}/${credentials.tokenFor(nodeId)}`;
}

interface Generation {
  id: number;
  /** What HAProxy holds (files as rendered, plus the edits sent or queued since). */
  sandboxes: Map<string, string>;
  nodes: Map<string, string>;
  live: boolean;
  openGate: () => void;
  gate: Promise<void>;
}

/** Keeps HAProxy's maps equal to the catalog. */
export class RouteMaps implements CatalogObserver {
  private generation: Generation | undefined;
  private nextId = 1;
  private pending: string[] = [];
  private chain: Promise<void> = Promise.resolve();
  /** Set by the supervisor: make HAProxy restart (its maps are then rendered again from the store). */
  onEditFailed: ((err: Error) => Promise<void>) | undefined;

  constructor(
    private readonly paths: RouteMapPaths,
    private readonly snapshot: () => CatalogSnapshot,
    private readonly credentials: NodeCredentials,
    private readonly log: Logger,
  ) {}

  /** Start a generation: the map files' text, from the store as it is now. Edits queue until {@link goLive}. */
  render(): { sandboxMap: string; nodeMap: string } {
    this.generation?.openGate();
    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    const gen: Generation = { id: this.nextId++, sandboxes: new Map(), nodes: new Map(), live: false, openGate, gate };
    const { sandboxes, nodes } = this.snapshot();
    for (const [id, entry] of sandboxes) {
      const nodeId = fastRouteOf(id, entry);
      if (nodeId) gen.sandboxes.set(id, nodeId);
    }
    for (const rec of nodes) {
      const target = nodeTargetOf(rec.nodeId, rec.proxyUrl, this.credentials);
      if (target) gen.nodes.set(rec.nodeId, target);
    }
    this.generation = gen;
    this.pending = [];
    const lines = (m: Map<string, string>) => [...m].map(([k, v]) => `${k} ${v}\n`).join('');
    return { sandboxMap: lines(gen.sandboxes), nodeMap: lines(gen.nodes) };
  }

  /** HAProxy of the current generation answers on its socket: send what queued meanwhile. */
  goLive(): void {
    if (!this.generation) return;
    this.generation.live = true;
    this.generation.openGate();
  }

  /** HAProxy is gone: edits are dropped until the next render (which starts from the store). */
  detach(): void {
    this.generation?.openGate();
    this.generation = undefined;
    this.pending = [];
  }

  sandboxChanged(sandboxId: string, entry: CatalogEntry | undefined): void {
    const gen = this.generation;
    if (gen) this.edit(gen.sandboxes, this.paths.sandboxMapPath, sandboxId, fastRouteOf(sandboxId, entry));
  }

  nodeChanged(nodeId: string, record: NodeRecord | undefined): void {
    const gen = this.generation;
    if (gen) this.edit(gen.nodes, this.paths.nodeMapPath, nodeId, nodeTargetOf(nodeId, record?.proxyUrl, this.credentials));
  }

  /**
   * Take a sandbox's route out of HAProxy only (a kill about to be forwarded); the catalog keeps its entry. An id
   * no route could have been made for is no map key (nor a runtime API word): nothing to take out.
   */
  withdraw(sandboxId: string): Promise<void> {
    const gen = this.generation;
    if (gen && SANDBOX_ID_RE.test(sandboxId)) this.edit(gen.sandboxes, this.paths.sandboxMapPath, sandboxId, undefined);
    return this.flush();
  }

  /** Resolves once every edit queued so far reached HAProxy (or HAProxy was restarted without it). */
  flush(): Promise<void> {
    const gen = this.generation;
    const batch = this.pending;
    this.pending = [];
    if (gen && batch.length > 0) {
      this.chain = this.chain.then(() => gen.gate).then(() => this.send(gen, batch));
    }
    return this.chain;
  }

  private edit(held: Map<string, string>, mapPath: string, key: string, value: string | undefined): void {
    const prior = held.get(key);
    if (prior === value) return;
    if (value === undefined) {
      held.delete(key);
      this.pending.push(`del map ${mapPath} ${key}`);
    } else {
      held.set(key, value);
      this.pending.push(prior === undefined ? `add map ${mapPath} ${key} ${value}` : `set map ${mapPath} ${key} ${value}`);
    }
    // Heartbeat-driven changes are not awaited by anyone; send them now anyway.
    void this.flush();
  }

  private async send(gen: Generation, batch: string[]): Promise<void> {
    if (this.generation !== gen || !gen.live) return;
    try {
      const reply = await runtimeCommand(this.paths.socketPath, batch);
      if (reply.trim() !== '') throw new Error(`haproxy refused a map edit: ${reply.trim().slice(0, 200)}`);
    } catch (err) {
      if (this.generation !== gen) return;
      this.log.error({ err }, 'traffic proxy: route map edit failed; restarting haproxy with maps from the catalog');
      this.detach();
      await this.onEditFailed?.(err as Error);
    }
  }
}
