// The deployment's orchestrator nodes as an operator reaches them (node RPC with the node token): where a
// sandbox runs, draining and un-draining a node, waiting until the edge sees them all healthy again.
import { create } from '@bufbuild/protobuf';
import { createClient, type Interceptor } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { InfoService, NodeStatus, SandboxService, SetStatusRequestSchema } from '@cove/contracts/orchestrator';
import { deriveNodeToken } from '@cove/auth-tokens';
import { eventually } from '@cove/test-support/eventually';
import type { Deployment } from './deployment.js';

export function nodeClients(d: Deployment, rpcPort: number) {
  // Each node accepts only its own token, derived from the deployment's node-credential key.
  const node = d.nodes.find((n) => n.rpcPort === rpcPort);
  if (!node) throw new Error(`no node of this deployment listens on rpc port ${rpcPort}`);
  const token = deriveNodeToken(d.secrets.nodeCredentialKey, node.nodeId);
  const auth: Interceptor = (next) => (req) => {
    req.header.set('authorization', `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${rpcPort}`, interceptors: [auth] });
  return { sandboxes: createClient(SandboxService, transport), info: createClient(InfoService, transport) };
}

/** The rpc port of the node a sandbox runs on right now, or undefined. */
export async function nodeOf(d: Deployment, sandboxId: string): Promise<number | undefined> {
  for (const n of d.nodes) {
    const listed = await nodeClients(d, n.rpcPort).sandboxes.list({});
    if (listed.sandboxes.some((s) => s.sandboxId === sandboxId)) return n.rpcPort;
  }
  return undefined;
}

/**
 * Drains or un-drains a node and waits until the edge (which placement asks) reports it so: placement acting on
 * the edge's previous view made a resume right after an un-drain find no node (a failed clean run).
 */
export async function setDraining(d: Deployment, rpcPort: number, draining: boolean, timeoutMs = 20_000): Promise<void> {
  await nodeClients(d, rpcPort).info.setStatus(create(SetStatusRequestSchema, { status: draining ? NodeStatus.DRAINING : NodeStatus.HEALTHY }));
  const nodeId = d.nodes.find((n) => n.rpcPort === rpcPort)!.nodeId;
  const want = draining ? 'draining' : 'healthy';
  await eventually(async () => (await edgeNodes(d)).find((n) => n.nodeId === nodeId)?.status === want, timeoutMs, `the edge to see node ${nodeId} ${want}`);
}

async function edgeNodes(d: Deployment): Promise<Array<{ nodeId: string; status: string }>> {
  const res = await fetch(`http://127.0.0.1:${d.ports.edgeApi}/v1/nodes`, { headers: { authorization: `Bearer ${d.secrets.clusterToken}` } });
  return (await res.json()) as Array<{ nodeId: string; status: string }>;
}

/** Waits until the edge (which placement asks) sees every node healthy, e.g. after an un-drain. */
export async function allNodesHealthy(d: Deployment, timeoutMs = 20_000): Promise<void> {
  // The deployment's own nodes: a node a test joined and removed stays listed (unhealthy) until the edge forgets it.
  await eventually(async () => {
    const nodes = await edgeNodes(d);
    return d.nodes.every((own) => nodes.find((n) => n.nodeId === own.nodeId)?.status === 'healthy');
  }, timeoutMs, 'every node to come back healthy');
}
