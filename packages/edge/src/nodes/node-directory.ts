// The edge's view of the cluster's orchestrator nodes, fed by heartbeats (proto/cove/edge/v1/edge.proto).
// A node that beats is healthy (or draining, as its Info says); after about three missed beats it is
// unhealthy — still routed to, since its sandboxes may well be running — and after `forgetAfterMs` it is
// forgotten with its catalog entries. Each heartbeat also reconciles the catalog with the node's own list of
// sandboxes, so a restarted edge (or a lost Create reply) heals within one beat.

import { create, fromJson, toJson, type JsonObject } from '@bufbuild/protobuf';
import { InfoResponseSchema, NodeStatus, type InfoResponse } from '@cove/contracts/orchestrator';
import type { HeartbeatRequest } from '@cove/contracts/edge';
import type { Logger } from 'pino';
import { EdgeError } from '../errors.js';
import type { EdgeStore, NodeRecord } from '../store/edge-store.js';

/** Health of a node as the edge reports it. */
export type NodeHealth = 'healthy' | 'draining' | 'unhealthy';

/** A node row with its computed health. */
export interface NodeView extends NodeRecord {
  status: NodeHealth;
}

/** Timings of the directory. */
export interface NodeDirectoryOptions {
  /** Heartbeat interval the edge asks nodes for. */
  intervalMs: number;
  /** Silence after which a node counts as unhealthy (≈3 missed beats). */
  unhealthyAfterMs: number;
  /** Silence after which a node is forgotten. */
  forgetAfterMs: number;
  /** Catalog entries younger than this survive a heartbeat that does not list them (Create in flight). */
  reconcileGraceMs: number;
}

export const DEFAULT_DIRECTORY_OPTIONS: NodeDirectoryOptions = {
  intervalMs: 2_000,
  unhealthyAfterMs: 6_500,
  forgetAfterMs: 300_000,
  reconcileGraceMs: 30_000,
};

const statusJson = (status: NodeStatus): unknown =>
  (toJson(InfoResponseSchema, create(InfoResponseSchema, { status })) as JsonObject).status;
const DRAINING = statusJson(NodeStatus.DRAINING);
const UNHEALTHY = statusJson(NodeStatus.UNHEALTHY);
export const NODE_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

function checkUrl(field: string, value: string): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new EdgeError('invalid_argument', `${field} must be an absolute http(s) URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new EdgeError('invalid_argument', `${field} must be an absolute http(s) URL`);
  }
}

/** Registry of nodes over an EdgeStore. */
export class NodeDirectory {
  constructor(
    private readonly store: EdgeStore,
    private readonly log: Logger,
    readonly options: NodeDirectoryOptions = DEFAULT_DIRECTORY_OPTIONS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Record a heartbeat and reconcile the node's sandboxes into the catalog. */
  async heartbeat(req: HeartbeatRequest): Promise<void> {
    const info = req.info;
    if (!info || !NODE_ID_RE.test(info.nodeId)) {
      throw new EdgeError('invalid_argument', 'info.node_id must match ^[A-Za-z0-9._-]{1,128}$');
    }
    checkUrl('rpc_url', req.rpcUrl);
    checkUrl('proxy_url', req.proxyUrl);
    const now = this.now();
    const prior = await this.store.getNode(info.nodeId);
    if (!prior) this.log.info({ nodeId: info.nodeId, rpcUrl: req.rpcUrl, proxyUrl: req.proxyUrl }, 'node registered');
    await this.store.putNode(
      {
        nodeId: info.nodeId,
        rpcUrl: req.rpcUrl.replace(/\/+$/, ''),
        proxyUrl: req.proxyUrl.replace(/\/+$/, ''),
        info: toJson(InfoResponseSchema, info),
        firstSeenAt: prior?.firstSeenAt ?? now,
        lastHeartbeatAt: now,
      },
      this.options.forgetAfterMs,
    );
    const ids = req.sandboxIds.filter((id) => /^[a-z0-9]+$/.test(id));
    const traffic = new Map<string, string>();
    for (const t of req.sandboxTraffic) {
      const hash = t.trafficTokenSha256.toLowerCase();
      if (hash === '' || /^[0-9a-f]{64}$/.test(hash)) traffic.set(t.sandboxId, hash);
    }
    const otherNodes = new Set((await this.store.listNodes()).map((n) => n.nodeId));
    otherNodes.delete(info.nodeId);
    const { added, removed } = await this.store.reconcileNode(info.nodeId, ids, now, this.options.reconcileGraceMs, traffic, otherNodes);
    if (added > 0 || removed > 0) this.log.debug({ nodeId: info.nodeId, added, removed }, 'catalog reconciled from heartbeat');
  }

  /** A node by id, with its health; undefined when unknown or forgotten. */
  async get(nodeId: string): Promise<NodeView | undefined> {
    const rec = await this.store.getNode(nodeId);
    return rec && this.view(rec);
  }

  /** All known nodes, oldest first (E2B's discovery order). */
  async list(): Promise<NodeView[]> {
    const rows = await this.store.listNodes();
    return rows.sort((a, b) => a.firstSeenAt - b.firstSeenAt || a.nodeId.localeCompare(b.nodeId)).map((r) => this.view(r));
  }

  /** The node's last Info as the generated message. */
  info(rec: NodeRecord): InfoResponse {
    return fromJson(InfoResponseSchema, rec.info, { ignoreUnknownFields: true });
  }

  private view(rec: NodeRecord): NodeView {
    let status: NodeHealth;
    if (this.now() - rec.lastHeartbeatAt > this.options.unhealthyAfterMs) status = 'unhealthy';
    else {
      // Read the enum straight from the stored JSON: this runs on every sandbox request, fromJson would not.
      const reported = (rec.info as { status?: unknown } | null)?.status;
      status = reported === DRAINING ? 'draining' : reported === UNHEALTHY ? 'unhealthy' : 'healthy';
    }
    return { ...rec, status };
  }
}
