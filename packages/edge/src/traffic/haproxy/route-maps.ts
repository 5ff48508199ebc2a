// HAProxy's two route maps, kept equal to the edge's catalog: sandbox id → node id for public, running
// (not `recovered`) sandboxes, and node id → `<ipv4>/<port>/<node token>` for nodes the registry knows. The
// files are rendered whole from the store at every HAProxy start; in between, each catalog change becomes a
// runtime API edit, and a store write is not done (RouteSyncedStore) until HAProxy has applied it. A failed
// edit restarts HAProxy, whose new maps come from the store again, so a route never outlives its entry.
//
// Safety: HAProxy sets E2b-Sandbox-Id/-Port from the parse it looked up and the node's own token, so a stale
// or wrong entry can only reach a node that does not run that sandbox and answers "not found".
//
// The third map, sandbox id → `<ipv4>`, is the one-hop route: for a sandbox in the sandbox map whose node shares
// this edge's network namespace (the node's Info says which), HAProxy connects to the sandbox's address itself.
// A stale entry there would reach whichever sandbox holds the address next, so it leans on the node's rule that a
// released address is not given to another sandbox for 10 minutes (docs/decisions.md, "A released sandbox
// address waits before it is reused"), longer than any entry here outlives its sandbox: a kill or pause through
// the control link withdraws the route first, a node-side end goes with the next heartbeat's reconcile (≤ 32 s),
// and a silent node's entries are forgotten after 300 s.

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
  directMapPath: string;
}

/** The node id HAProxy may route a sandbox to by itself, or undefined (the fallback decides). */
export function fastRouteOf(sandboxId: string, entry: CatalogEntry | undefined): string | undefined {
  if (!entry || entry.trafficTokenHash || entry.recovered) return undefined;
  return SANDBOX_ID_RE.test(sandboxId) && NODE_ID_RE.test(entry.nodeId) ? entry.nodeId : undefined;
}

/** The sandbox's address HAProxy may connect to itself (one hop), or undefined (through its node proxy). */
export function directRouteOf(sandboxId: string, entry: CatalogEntry | undefined, localNodes: ReadonlySet<string>): string | undefined {
  const nodeId = fastRouteOf(sandboxId, entry);
  if (!nodeId || !entry?.address || entry.hostMasked || !localNodes.has(nodeId)) return undefined;
  return isIP(entry.address) === 4 ? entry.address : undefined;
}

/** Whether a node routes its sandboxes in this edge's network namespace (its Info's network_namespace). */
export function sharesNamespace(record: NodeRecord | undefined, localNamespace: string): boolean {
  const theirs = (record?.info as { networkNamespace?: unknown } | null | undefined)?.networkNamespace;
  return localNamespace !== '' && theirs === localNamespace;
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
  direct: Map<string, string>;
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
  /** Nodes sharing this edge's network namespace, as their last heartbeat said. */
  private readonly localNodes = new Set<string>();
  /** Set by the supervisor: make HAProxy restart (its maps are then rendered again from the store). */
  onEditFailed: ((err: Error) => Promise<void>) | undefined;

  constructor(
    private readonly paths: RouteMapPaths,
    private readonly snapshot: () => CatalogSnapshot,
    private readonly credentials: NodeCredentials,
    private readonly log: Logger,
    /** networkNamespaceId() of this edge ('' = never route directly). */
    private readonly localNamespace: string,
  ) {}

  /** Start a generation: the map files' text, from the store as it is now. Edits queue until {@link goLive}. */
  render(): { sandboxMap: string; nodeMap: string; directMap: string } {
    this.generation?.openGate();
    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    const gen: Generation = { id: this.nextId++, sandboxes: new Map(), nodes: new Map(), direct: new Map(), live: false, openGate, gate };
    const { sandboxes, nodes } = this.snapshot();
    this.localNodes.clear();
    for (const rec of nodes) {
      const target = nodeTargetOf(rec.nodeId, rec.proxyUrl, this.credentials);
      if (target) gen.nodes.set(rec.nodeId, target);
      if (sharesNamespace(rec, this.localNamespace)) this.localNodes.add(rec.nodeId);
    }
    for (const [id, entry] of sandboxes) {
      const nodeId = fastRouteOf(id, entry);
      if (nodeId) gen.sandboxes.set(id, nodeId);
      const address = directRouteOf(id, entry, this.localNodes);
      if (address) gen.direct.set(id, address);
    }
    this.generation = gen;
    this.pending = [];
    const lines = (m: Map<string, string>) => [...m].map(([k, v]) => `${k} ${v}\n`).join('');
    return { sandboxMap: lines(gen.sandboxes), nodeMap: lines(gen.nodes), directMap: lines(gen.direct) };
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
    if (gen) this.editSandbox(gen, sandboxId, fastRouteOf(sandboxId, entry), directRouteOf(sandboxId, entry, this.localNodes));
  }

  nodeChanged(nodeId: string, record: NodeRecord | undefined): void {
    const gen = this.generation;
    if (!gen) return;
    this.edit(gen.nodes, this.paths.nodeMapPath, nodeId, nodeTargetOf(nodeId, record?.proxyUrl, this.credentials));
    const local = record !== undefined && sharesNamespace(record, this.localNamespace);
    if (local === this.localNodes.has(nodeId)) return;
    // Rare (a node's first beat, or one that moved): its sandboxes' one-hop routes follow.
    if (local) this.localNodes.add(nodeId);
    else this.localNodes.delete(nodeId);
    for (const [id, entry] of this.snapshot().sandboxes) {
      if (entry.nodeId === nodeId) this.editSandbox(gen, id, fastRouteOf(id, entry), directRouteOf(id, entry, this.localNodes));
    }
  }

  /**
   * Take a sandbox's route out of HAProxy only (a kill about to be forwarded); the catalog keeps its entry. An id
   * no route could have been made for is no map key (nor a runtime API word): nothing to take out.
   */
  withdraw(sandboxId: string): Promise<void> {
    const gen = this.generation;
    if (gen && SANDBOX_ID_RE.test(sandboxId)) this.editSandbox(gen, sandboxId, undefined, undefined);
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

  /**
   * Both of a sandbox's routes. The one-hop route is only looked up beside a node route, and a changed one is
   * taken out before the node route changes, so no moment pairs a new node with an old address.
   */
  private editSandbox(gen: Generation, sandboxId: string, nodeId: string | undefined, address: string | undefined): void {
    const direct = nodeId ? address : undefined;
    if (gen.direct.get(sandboxId) !== direct) this.edit(gen.direct, this.paths.directMapPath, sandboxId, undefined);
    this.edit(gen.sandboxes, this.paths.sandboxMapPath, sandboxId, nodeId);
    if (direct) this.edit(gen.direct, this.paths.directMapPath, sandboxId, direct);
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
