// The control link: how the control plane reaches a customer cluster. Node discovery is the edge's REST
// `GET /v1/nodes` (and COPY upload links its `POST /v1/templates/files`); sandbox and template-build operations
// are `cove.orchestrator.v1.SandboxService` / `TemplateService` over gRPC (h2c or TLS) to the edge, which routes
// each call to the node named in `cove-node-id`. Every call carries the cluster token — or, for a cluster whose
// customer gates it with their own identity provider (COVE_CLUSTER_OIDC_CLIENTS), an access token the control
// plane obtained from that provider by client credentials (docs/operating.md). Disabling that client at the
// provider cuts the control plane off once its last token expires; nothing here falls back to the cluster token.
// An outbound-only cluster (endpoint `outbound://…`) has no address to dial: its edge dials the control plane and
// the same calls run over that connection (outbound-link.ts).

import { fromJson, create, type JsonValue } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { ClientCredentialsTokens, OidcError, type ClientCredentialsOptions } from '@cove/auth-tokens/oidc';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import {
  InfoResponseSchema,
  SandboxService,
  SandboxSpecSchema,
  SnapshotCommit,
  TemplateService,
  type BuildRequestSchema,
  type BuildStatusResponse,
  type SandboxInfo,
  type SandboxSpec,
  type SnapshotInfo,
} from '@cove/contracts/orchestrator';
import { LINK_SANDBOX_ID_HEADER, LINK_TRAFFIC_TOKEN_HEADER, NODE_ERROR_CODE_HEADER, NODE_ID_HEADER } from '@cove/contracts/link';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { constants as h2, type SecureClientSessionOptions } from 'node:http2';
import { rootCertificates } from 'node:tls';
import { z } from 'zod';
import type { ControlLinkTls } from '../config.js';
import { ClusterAccessRefused, ClusterUnavailable, NotFound } from '../errors.js';
import type { Cluster } from '../store/cluster-store.js';
import type { NodeView } from './placement.js';
import type { EgressRules, NodeNetwork } from '../sandboxes/network.js';
import { isNoLinkOpen, isOutboundEndpoint, type OutboundLinks } from './outbound-link.js';
import { createUnaryTransport } from './unary-transport.js';
import { RecentPlacements } from './recent-placements.js';

/** What carries the control link's HTTP/2 requests: a dialled session, or an outbound-only cluster's links. */
type LinkSessions = Pick<Http2SessionManager, 'authority' | 'request' | 'notifyResponseByteRead'> & { abort?: () => void };
/** The largest gRPC message the control plane reads from a cluster (the edge is the cluster's, so hostile). */
const READ_MAX_BYTES = 64 * 1024 * 1024;

/** The edge's node list entry (edge contract); `info` is the node's InfoResponse as protobuf JSON. */
const NodeListSchema = z.array(
  z
    .object({
      nodeId: z.string().min(1),
      status: z.string().default('unknown'),
      rpcUrl: z.string().optional(),
      proxyUrl: z.string().optional(),
      lastHeartbeatAt: z.string().nullable().optional(),
      info: z.unknown().optional(),
    })
    .passthrough(),
);

/** A Create's spec; `snapshotId` starts it from a snapshot (a resume, or a new sandbox from a persistent one). */
export type SandboxSpecInit = Omit<SandboxSpec, '$typeName' | 'startTime' | 'endTime' | 'snapshotId' | 'cold' | 'egress' | 'volumeMounts'> & {
  /** Team volumes to mount (docs/volumes.md); absent = none. */
  volumeMounts?: Array<{ volumeId: string; path: string; quotaBytes: bigint }>;
  /** Egress address rules (sandboxes/network.ts); absent = none. */
  egress?: EgressRules;
  startMs: number;
  endMs: number;
  snapshotId?: string;
  /** With snapshotId: filesystem only, boot the start command again. */
  cold?: boolean;
};

/** The edge's answer to `POST /v1/templates/files` (docs/template-builds.md, "Edge"). */
const FileUploadSchema = z.object({
  present: z.boolean(),
  url: z.string().min(1).optional(),
  headers: z.record(z.string()).optional(),
});
export type FileUpload = z.infer<typeof FileUploadSchema>;

/**
 * A control-link call failed with a gRPC status (the caller decides what a code means). `detail` is the node's
 * own message, kept apart from the operation so callers can quote it without parsing `message`.
 */
export class LinkCallError extends Error {
  constructor(
    readonly code: Code,
    readonly operation: string,
    readonly detail: string,
    options?: ErrorOptions,
    /** The node's own error code (NODE_ERROR_CODE_HEADER), when the node answered with one. */
    readonly nodeCode?: string,
  ) {
    super(`${operation}: ${detail}`, options);
    this.name = 'LinkCallError';
  }
}

function asLinkError(err: unknown, what: string): LinkCallError {
  const ce = ConnectError.from(err);
  return new LinkCallError(ce.code, what, ce.rawMessage, { cause: err }, ce.metadata.get(NODE_ERROR_CODE_HEADER) ?? undefined);
}

/** No TLS settings: `https://` endpoints are verified against Node's root certificates only. */
export const NO_CONTROL_LINK_TLS: Readonly<ControlLinkTls> = Object.freeze({ ca: undefined, cert: undefined, key: undefined });

/**
 * Session options for an `https://` endpoint: the system roots plus the configured CA, and the client
 * certificate when there is one. Verification stays on (Node's default `rejectUnauthorized: true`).
 */
function tlsSessionOptions(tls: Readonly<ControlLinkTls>): SecureClientSessionOptions {
  return {
    minVersion: 'TLSv1.2',
    ...(tls.ca ? { ca: [...rootCertificates, tls.ca.toString('utf8')] } : {}),
    ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
  };
}

export class ControlLink {
  private readonly sessions: LinkSessions;
  private readonly sandboxes: Client<typeof SandboxService>;
  private readonly templates: Client<typeof TemplateService>;

  constructor(
    readonly cluster: Cluster,
    private readonly timeoutMs: number,
    tls: Readonly<ControlLinkTls> = NO_CONTROL_LINK_TLS,
    /** Set = the cluster takes only tokens of its customer's identity provider; these are the control plane's. */
    private readonly tokens?: ClientCredentialsTokens,
    /** The links outbound-only clusters dialled in on; required for such a cluster. */
    outbound?: OutboundLinks,
    /** How long one node list serves placements (placementCandidates); 0 = every placement asks the edge. */
    private readonly nodeListCacheMs = 0,
  ) {
    let baseUrl = cluster.endpoint;
    if (isOutboundEndpoint(cluster.endpoint)) {
      if (!outbound) throw new ClusterUnavailable(`cluster "${cluster.name}" is outbound-only and this control plane takes no links`);
      this.sessions = outbound.sessionManager(cluster);
      baseUrl = this.sessions.authority;
    } else {
      const secure = new URL(cluster.endpoint).protocol === 'https:';
      // One HTTP/2 session (h2c or h2 over TLS) carries both the gRPC calls and the REST discovery.
      this.sessions = new Http2SessionManager(cluster.endpoint, { idleConnectionTimeoutMs: 60_000 }, secure ? tlsSessionOptions(tls) : undefined);
    }
    const fallback = createGrpcTransport({ baseUrl, sessionManager: this.sessions, interceptors: [this.authorize], readMaxBytes: READ_MAX_BYTES });
    const transport = createUnaryTransport({
      sessions: this.sessions,
      readMaxBytes: READ_MAX_BYTES,
      authorize: async () => ({ authorization: `Bearer ${await this.bearer()}` }),
      // The cluster refused the token (e.g. its provider rotated keys): the next call asks for a new one.
      refused: (h) => this.tokens?.invalidate(h.authorization!.slice('Bearer '.length)),
      fallback,
    });
    this.sandboxes = createClient(SandboxService, transport);
    this.templates = createClient(TemplateService, transport);
  }

  /** The credential of every call, asked for per call: a provider token may have been renewed since the last. */
  private async bearer(): Promise<string> {
    if (!this.tokens) return this.cluster.token;
    try {
      return await this.tokens.token();
    } catch (err) {
      if (err instanceof OidcError) throw new ClusterAccessRefused(`cluster "${this.cluster.name}": ${err.message}`, err.code, { cause: err });
      throw err;
    }
  }

  /** The credential on connect's own transport (the unary transport's fallback; unary-transport.ts does the same). */
  private readonly authorize: Interceptor = (next) => async (req) => {
    let token: string;
    try {
      token = await this.bearer();
    } catch (err) {
      throw new ConnectError(err instanceof Error ? err.message : String(err), Code.Unauthenticated, undefined, undefined, err);
    }
    req.header.set('authorization', `Bearer ${token}`);
    try {
      return await next(req);
    } catch (err) {
      // The cluster refused the token (e.g. its provider rotated keys): the next call asks for a new one.
      if (ConnectError.from(err).code === Code.Unauthenticated) this.tokens?.invalidate(token);
      throw err;
    }
  };

  /** A REST call that got no answer; an outbound-only cluster without a link says so. */
  private unreachable(err: unknown): ClusterUnavailable {
    const why = isNoLinkOpen(err) ? err.rawMessage : `cluster "${this.cluster.name}" is unreachable`;
    return new ClusterUnavailable(why, { cause: err });
  }

  private headers(nodeId: string, extra: Record<string, string> = {}): Record<string, string> {
    return { [NODE_ID_HEADER]: nodeId, ...extra };
  }

  /**
   * A JSON request to the edge's REST API. It goes over the same HTTP/2 connection as the gRPC calls (the edge
   * serves REST on h2c and HTTP/1.1 alike), so one connection carries the whole control link.
   */
  private async requestJson(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const first = await this.requestJsonOnce(method, path, body);
    // A provider token the edge refused (its provider rotated keys, say) is dropped; both REST calls are
    // idempotent, so one more try with a fresh token costs nothing and spares the caller a failure.
    if (first.status === 401 && this.tokens) return this.requestJsonOnce(method, path, body);
    return first;
  }

  private async requestJsonOnce(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const token = await this.bearer();
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const stream = await this.sessions.request(method, path, headers, {});
    const answered = await new Promise<{ status: number; body: unknown }>((resolve, reject) => {
      let status = 0;
      const chunks: Buffer[] = [];
      let size = 0;
      stream.setTimeout(this.timeoutMs, () => {
        stream.close(h2.NGHTTP2_CANCEL);
        reject(new Error(`${method} ${path} timed out`));
      });
      stream.on('response', (headers) => {
        status = Number(headers[':status']);
      });
      stream.on('data', (chunk: Buffer) => {
        this.sessions.notifyResponseByteRead(stream);
        size += chunk.length;
        if (size > 16 * 1024 * 1024) {
          stream.close(h2.NGHTTP2_CANCEL);
          reject(new Error(`${method} ${path}: response too large`));
          return;
        }
        chunks.push(chunk);
      });
      stream.on('error', reject);
      // A link that drops mid-answer closes the stream without an error: fail now, not at the timeout.
      stream.on('close', () => reject(new Error(`${method} ${path}: the link closed before the answer ended`)));
      stream.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status, body: text === '' ? undefined : (JSON.parse(text) as unknown) });
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
      stream.end(body === undefined ? undefined : JSON.stringify(body));
    });
    if (answered.status === 401) this.tokens?.invalidate(token);
    return answered;
  }

  /** The cluster's nodes as the edge sees them (edge REST `GET /v1/nodes`). */
  async listNodes(): Promise<NodeView[]> {
    let res: { status: number; body: unknown };
    try {
      res = await this.requestJson('GET', '/v1/nodes');
    } catch (err) {
      if (err instanceof ClusterAccessRefused) throw err;
      throw this.unreachable(err);
    }
    if (res.status === 401 || res.status === 403) throw refusedBy(this.cluster.name, res);
    if (res.status !== 200) throw new ClusterUnavailable(`cluster "${this.cluster.name}" node discovery answered ${res.status}`);
    const parsed = NodeListSchema.safeParse(res.body);
    if (!parsed.success) throw new ClusterUnavailable(`cluster "${this.cluster.name}" sent a malformed node list`);
    return parsed.data.map((n) => {
      let info;
      try {
        info = n.info === undefined ? undefined : fromJson(InfoResponseSchema, n.info as JsonValue, { ignoreUnknownFields: true });
      } catch {
        info = undefined; // a node whose info we cannot read is not a placement candidate
      }
      return { nodeId: n.nodeId, edgeStatus: n.status, info };
    });
  }

  /**
   * The candidates `rank` picks from the cluster's nodes, for a placement. A burst of creates asks the edge once
   * (the list is shared for `nodeListCacheMs`, and callers arriving while it is fetched wait for that fetch):
   * nodes report every 2 s, so a list this young is as current as the edge's own. A list that came from the
   * cache and yields no candidate is fetched again (a node may just have joined); failed fetches are not kept.
   */
  async placementCandidates<T>(rank: (nodes: NodeView[]) => T[]): Promise<T[]> {
    const first = this.sharedNodeList();
    const nodes = await first.nodes;
    if (first.fetched) return rank(nodes);
    try {
      const ranked = rank(nodes);
      if (ranked.length > 0) return ranked;
    } catch {
      // placeOn's NoCapacity / TemplateNotReady on a cached list: the fresh list decides
    }
    this.forgetNodeList();
    return rank(await this.sharedNodeList().nodes);
  }

  /** Sandboxes placed lately, per node and template, that the nodes' reports may not show yet (placement's `preferWarm`). */
  private readonly recentPlacements = new RecentPlacements();

  /** A placement picked `nodeId` for a sandbox of `templateId`. */
  recordPlacement(nodeId: string, templateId: string): void {
    this.recentPlacements.add(nodeId, templateId);
  }

  /** The create placed on `picked` started on `landed` instead (a failover), or nowhere (null). */
  placementLanded(picked: string, landed: string | null, templateId: string): void {
    if (landed === picked) return;
    this.recentPlacements.remove(picked, templateId);
    if (landed !== null) this.recentPlacements.add(landed, templateId);
  }

  /** Sandboxes of `templateId` placed on `nodeId` since its last report could show them. */
  placedRecently(nodeId: string, templateId: string): number {
    return this.recentPlacements.count(nodeId, templateId);
  }

  /** After a placement failed on a node (full, draining, gone): the next placement asks the edge again. */
  forgetNodeList(): void {
    this.nodeList = null;
  }

  private nodeList: { at: number; nodes: Promise<NodeView[]> } | null = null;

  private sharedNodeList(): { nodes: Promise<NodeView[]>; fetched: boolean } {
    const cur = this.nodeList;
    if (cur && Date.now() - cur.at < this.nodeListCacheMs) return { nodes: cur.nodes, fetched: false };
    const entry = { at: Date.now(), nodes: this.listNodes() };
    if (this.nodeListCacheMs > 0) {
      this.nodeList = entry;
      entry.nodes.catch(() => {
        if (this.nodeList === entry) this.nodeList = null;
      });
    }
    return { nodes: entry.nodes, fetched: true };
  }

  /**
   * Drains a node (no new sandboxes or builds; what runs stays) or returns it to service (edge REST
   * `POST /v1/nodes/{id}/drain|undrain`). Throws NotFound for a node the edge does not know.
   */
  async setNodeDraining(nodeId: string, draining: boolean): Promise<void> {
    let res: { status: number; body: unknown };
    const path = `/v1/nodes/${encodeURIComponent(nodeId)}/${draining ? 'drain' : 'undrain'}`;
    try {
      res = await this.requestJson('POST', path);
    } catch (err) {
      if (err instanceof ClusterAccessRefused) throw err;
      throw this.unreachable(err);
    }
    if (res.status === 401 || res.status === 403) throw refusedBy(this.cluster.name, res);
    // Placements from here on see the node's new state.
    this.forgetNodeList();
    if (res.status === 404) throw new NotFound(`node "${nodeId}" is not part of cluster "${this.cluster.name}"`);
    if (res.status !== 200) throw new ClusterUnavailable(`cluster "${this.cluster.name}" answered ${res.status} to ${draining ? 'drain' : 'undrain'} node "${nodeId}"`);
  }

  /**
   * The cluster's secret-sealing public key, as its nodes publish it (they derive it from the cluster key the
   * control plane never holds). Nodes that disagree mean a misconfigured cluster: nothing is sealed then.
   */
  async secretsPublicKey(): Promise<string> {
    const keys = new Set((await this.listNodes()).map((n) => n.info?.secretsPublicKey ?? '').filter((k) => k !== ''));
    if (keys.size === 1) return [...keys][0]!;
    throw new ClusterUnavailable(
      keys.size === 0 ? `cluster "${this.cluster.name}" has no node that can hold secrets` : `cluster "${this.cluster.name}": its nodes publish different secret keys`,
    );
  }

  /** Stores a sealed secret value in cluster storage (edge `POST /v1/secrets`); the edge cannot open it. */
  async putSecret(teamId: string, nameKey: string, sealed: string): Promise<void> {
    await this.secretCall('/v1/secrets', { teamId, nameKey, sealed }, 'store a secret');
  }

  /** Removes a sealed secret from cluster storage (edge `POST /v1/secrets/delete`); absent is not an error. */
  async deleteSecret(teamId: string, nameKey: string): Promise<void> {
    await this.secretCall('/v1/secrets/delete', { teamId, nameKey }, 'delete a secret');
  }

  private async secretCall(path: string, body: unknown, what: string): Promise<void> {
    let res: { status: number; body: unknown };
    try {
      res = await this.requestJson('POST', path, body);
    } catch (err) {
      if (err instanceof ClusterAccessRefused) throw err;
      throw new ClusterUnavailable(`cluster "${this.cluster.name}" is unreachable`, { cause: err });
    }
    if (res.status === 401 || res.status === 403) throw refusedBy(this.cluster.name, res);
    if (res.status !== 200 && res.status !== 204) throw new ClusterUnavailable(`cluster "${this.cluster.name}" could not ${what} (${res.status})`);
  }

  async create(nodeId: string, spec: SandboxSpecInit, trafficAccessToken: string | null): Promise<SandboxInfo> {
    const { startMs, endMs, ...rest } = spec;
    const sandbox = create(SandboxSpecSchema, { ...rest, startTime: timestampFromMs(startMs), endTime: timestampFromMs(endMs) });
    const extra: Record<string, string> = { [LINK_SANDBOX_ID_HEADER]: spec.sandboxId };
    if (trafficAccessToken) extra[LINK_TRAFFIC_TOKEN_HEADER] = trafficAccessToken;
    try {
      const res = await this.sandboxes.create({ sandbox }, { headers: this.headers(nodeId, extra), timeoutMs: this.timeoutMs });
      if (!res.sandbox) throw new LinkCallError(Code.Internal, 'create', 'node returned no sandbox');
      return res.sandbox;
    } catch (err) {
      if (err instanceof LinkCallError) throw err;
      throw asLinkError(err, 'create');
    }
  }

  /**
   * Pauses a sandbox into `snapshotId` (docs/pause-resume.md). Carries `cove-sandbox-id` so the edge drops the
   * sandbox's route once the node answered. Idempotent on the node for the same ids.
   */
  async pause(nodeId: string, sandboxId: string, snapshotId: string, memory: boolean): Promise<SnapshotInfo> {
    try {
      const res = await this.sandboxes.pause(
        { sandboxId, snapshotId, memory },
        { headers: this.headers(nodeId, { [LINK_SANDBOX_ID_HEADER]: sandboxId }), timeoutMs: this.timeoutMs },
      );
      if (!res.snapshot) throw new LinkCallError(Code.Internal, 'pause', 'node returned no snapshot');
      return res.snapshot;
    } catch (err) {
      if (err instanceof LinkCallError) throw err;
      throw asLinkError(err, 'pause');
    }
  }

  /**
   * A persistent snapshot: the sandbox runs on where it is, so the edge's route stays (no `cove-sandbox-id`).
   * `commit` as the contract's SnapshotCommit: NOW unless a fork defers it to its copies on other nodes.
   */
  async snapshot(nodeId: string, sandboxId: string, snapshotId: string, commit = SnapshotCommit.NOW): Promise<SnapshotInfo> {
    try {
      const res = await this.sandboxes.snapshot({ sandboxId, snapshotId, commit }, { headers: this.headers(nodeId), timeoutMs: this.timeoutMs });
      if (!res.snapshot) throw new LinkCallError(Code.Internal, 'snapshot', 'node returned no snapshot');
      return res.snapshot;
    } catch (err) {
      if (err instanceof LinkCallError) throw err;
      throw asLinkError(err, 'snapshot');
    }
  }

  /** Removes snapshots from cluster storage and the node's cache; unknown ids are skipped by the node. */
  async deleteSnapshots(nodeId: string, snapshotIds: string[]): Promise<void> {
    try {
      await this.sandboxes.deleteSnapshots({ snapshotIds }, { headers: this.headers(nodeId), timeoutMs: this.timeoutMs });
    } catch (err) {
      throw asLinkError(err, 'delete snapshots');
    }
  }

  async delete(nodeId: string, sandboxId: string, reason: string): Promise<void> {
    try {
      await this.sandboxes.delete(
        { sandboxId, reason },
        { headers: this.headers(nodeId, { [LINK_SANDBOX_ID_HEADER]: sandboxId }), timeoutMs: this.timeoutMs },
      );
    } catch (err) {
      throw asLinkError(err, 'delete');
    }
  }

  async update(nodeId: string, sandboxId: string, endMs: number): Promise<void> {
    try {
      await this.sandboxes.update(
        { sandboxId, endTime: timestampFromMs(endMs) },
        { headers: this.headers(nodeId), timeoutMs: this.timeoutMs },
      );
    } catch (err) {
      throw asLinkError(err, 'update');
    }
  }

  /** Replaces a running sandbox's egress on its node (live; the node keeps the previous policy on failure). */
  async updateNetwork(nodeId: string, sandboxId: string, net: NodeNetwork): Promise<void> {
    try {
      await this.sandboxes.updateNetwork(
        { sandboxId, allowInternetAccess: net.allowInternetAccess, egress: net.egress },
        { headers: this.headers(nodeId), timeoutMs: this.timeoutMs },
      );
    } catch (err) {
      throw asLinkError(err, 'updateNetwork');
    }
  }

  async list(nodeId: string): Promise<SandboxInfo[]> {
    try {
      const res = await this.sandboxes.list({}, { headers: this.headers(nodeId), timeoutMs: this.timeoutMs });
      return res.sandboxes;
    } catch (err) {
      throw asLinkError(err, 'list');
    }
  }

  /**
   * Asks the cluster whether it holds a team's COPY files of `hash` and, if not, for a short-lived upload URL
   * into cluster storage (edge `POST /v1/templates/files`). The files never pass through the control plane.
   */
  async fileUpload(teamId: string, hash: string): Promise<FileUpload> {
    let res: { status: number; body: unknown };
    try {
      res = await this.requestJson('POST', '/v1/templates/files', { teamId, hash });
    } catch (err) {
      if (err instanceof ClusterAccessRefused) throw err;
      throw this.unreachable(err);
    }
    if (res.status === 401 || res.status === 403) throw refusedBy(this.cluster.name, res);
    if (res.status !== 200 && res.status !== 201) {
      throw new ClusterUnavailable(`cluster "${this.cluster.name}" could not provide an upload link (${res.status})`);
    }
    const parsed = FileUploadSchema.safeParse(res.body);
    if (!parsed.success) throw new ClusterUnavailable(`cluster "${this.cluster.name}" sent a malformed upload link`);
    return parsed.data;
  }

  async build(nodeId: string, req: MessageInitShape<typeof BuildRequestSchema>): Promise<void> {
    try {
      await this.templates.build(req, { headers: this.headers(nodeId), timeoutMs: this.timeoutMs });
    } catch (err) {
      throw asLinkError(err, 'build');
    }
  }

  async buildStatus(nodeId: string, templateId: string, buildId: string, logsOffset: number, limit: number): Promise<BuildStatusResponse> {
    try {
      return await this.templates.buildStatus({ templateId, buildId, logsOffset, limit }, { headers: this.headers(nodeId), timeoutMs: this.timeoutMs });
    } catch (err) {
      throw asLinkError(err, 'build status');
    }
  }

  async deleteBuilds(nodeId: string, templateId: string, buildIds: string[]): Promise<void> {
    try {
      await this.templates.deleteBuilds({ templateId, buildIds }, { headers: this.headers(nodeId), timeoutMs: this.timeoutMs });
    } catch (err) {
      throw asLinkError(err, 'delete builds');
    }
  }

  close(): void {
    this.sessions.abort?.();
  }
}

/** The edge's refusal of the control plane's credential, with the edge's own reason code when it gave one. */
function refusedBy(clusterName: string, res: { status: number; body: unknown }): ClusterAccessRefused {
  const parsed = z.object({ error: z.string().max(64).optional(), message: z.string().max(512).optional() }).safeParse(res.body);
  const reason = parsed.success ? parsed.data : {};
  return new ClusterAccessRefused(`cluster "${clusterName}" refused the control plane (${res.status}${reason.message ? `: ${reason.message}` : ''})`, reason.error ?? `http_${res.status}`);
}

/** One link per cluster, rebuilt when the cluster's endpoint or token changes. */
export class ControlLinks {
  private readonly links = new Map<string, ControlLink>();
  /** Per cluster name: its token source, kept across link rebuilds so a valid token is not thrown away. */
  private readonly tokens = new Map<string, ClientCredentialsTokens>();

  constructor(
    private readonly timeoutMs: number,
    private readonly tls: Readonly<ControlLinkTls> = NO_CONTROL_LINK_TLS,
    /** Client credentials at each gated cluster's identity provider, by cluster name. */
    private readonly oidcClients: Readonly<Record<string, ClientCredentialsOptions>> = {},
    /** The links of outbound-only clusters (app.ts serves their handshake). */
    readonly outbound?: OutboundLinks,
    /** ControlLink's nodeListCacheMs (COVE_NODE_LIST_CACHE_MS). */
    private readonly nodeListCacheMs = 0,
  ) {}

  private tokensFor(name: string): ClientCredentialsTokens | undefined {
    const o = this.oidcClients[name];
    if (!o) return undefined;
    let t = this.tokens.get(name);
    if (!t) {
      t = new ClientCredentialsTokens(o);
      this.tokens.set(name, t);
    }
    return t;
  }

  for(cluster: Cluster): ControlLink {
    const cur = this.links.get(cluster.id);
    if (cur && cur.cluster.endpoint === cluster.endpoint && cur.cluster.token === cluster.token && cur.cluster.name === cluster.name) return cur;
    cur?.close();
    const link = new ControlLink(cluster, this.timeoutMs, this.tls, this.tokensFor(cluster.name), this.outbound, this.nodeListCacheMs);
    this.links.set(cluster.id, link);
    return link;
  }

  closeAll(): void {
    for (const l of this.links.values()) l.close();
    this.links.clear();
    this.outbound?.closeAll();
  }
}
