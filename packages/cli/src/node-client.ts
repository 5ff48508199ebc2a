import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { SandboxService, type SandboxInfo } from '@cove/contracts/orchestrator';

function client(rpcUrl: string, nodeToken: string) {
  const transport = createGrpcTransport({
    baseUrl: rpcUrl,
    interceptors: [
      (next) => async (req) => {
        req.header.set('authorization', `Bearer ${nodeToken}`);
        return next(req);
      },
    ],
  });
  return createClient(SandboxService, transport);
}

/** The sandboxes one orchestrator runs, asked over its RPC with that node's own token (secrets.nodeTokenOf). */
export async function listSandboxes(rpcUrl: string, nodeToken: string): Promise<SandboxInfo[]> {
  return (await client(rpcUrl, nodeToken).list({})).sandboxes;
}

/** Kill every sandbox on one orchestrator; returns how many were killed. */
export async function deleteAllSandboxes(rpcUrl: string, nodeToken: string): Promise<number> {
  const c = client(rpcUrl, nodeToken);
  const { sandboxes } = await c.list({});
  for (const s of sandboxes) await c.delete({ sandboxId: s.sandboxId, reason: 'cove down' });
  return sandboxes.length;
}
