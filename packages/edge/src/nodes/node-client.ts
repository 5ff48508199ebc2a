// Calls the edge itself makes to a node's RPC (InfoService/SetStatus for drain; TemplateService/BuildStatus for
// the public port's build status), with that node's token. One
// HTTP/2 session manager per node URL, aborted on close so no session outlives the edge.

import { create } from '@bufbuild/protobuf';
import { ConnectError, createClient, type Client } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { InfoService, NodeStatus, SetStatusRequestSchema, TemplateService, type BuildStatusResponse } from '@cove/contracts/orchestrator';
import { NodeUnavailable } from '../errors.js';
import type { NodeCredentials } from './node-credentials.js';

/** Pool of InfoService clients keyed by node RPC URL. */
export class NodeClients {
  private readonly clients = new Map<string, { manager: Http2SessionManager; client: Client<typeof InfoService>; templates: Client<typeof TemplateService> }>();

  constructor(private readonly credentials: NodeCredentials) {}

  /** Ask a node to drain (`draining: true`) or return to service; resolves to the status it reports. */
  async setStatus(nodeId: string, rpcUrl: string, draining: boolean): Promise<NodeStatus> {
    const status = draining ? NodeStatus.DRAINING : NodeStatus.HEALTHY;
    try {
      const res = await this.client(rpcUrl).setStatus(create(SetStatusRequestSchema, { status }), {
        headers: { authorization: `Bearer ${this.credentials.tokenFor(nodeId)}` },
        timeoutMs: 10_000,
      });
      return res.status;
    } catch (err) {
      throw new NodeUnavailable(nodeId, { cause: ConnectError.from(err) });
    }
  }

  /** One page of a build's state and log from a node; ConnectError (NOT_FOUND when the node does not know it) as is. */
  async buildStatus(nodeId: string, rpcUrl: string, templateId: string, buildId: string, logsOffset: number, limit: number): Promise<BuildStatusResponse> {
    this.client(rpcUrl);
    return this.clients.get(rpcUrl)!.templates.buildStatus(
      { templateId, buildId, logsOffset, limit },
      { headers: { authorization: `Bearer ${this.credentials.tokenFor(nodeId)}` }, timeoutMs: 10_000 },
    );
  }

  close(): void {
    for (const { manager } of this.clients.values()) manager.abort();
    this.clients.clear();
  }

  private client(rpcUrl: string): Client<typeof InfoService> {
    let entry = this.clients.get(rpcUrl);
    if (!entry) {
      const manager = new Http2SessionManager(rpcUrl, { idleConnectionTimeoutMs: 60_000 });
      const transport = createGrpcTransport({ baseUrl: rpcUrl, sessionManager: manager });
      const client = createClient(InfoService, transport);
      this.clients.set(rpcUrl, (entry = { manager, client, templates: createClient(TemplateService, transport) }));
    }
    return entry.client;
  }
}
