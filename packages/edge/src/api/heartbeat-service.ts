// cove.edge.v1.NodeRegistry/Heartbeat: orchestrators register and keep themselves registered, each with its own
// node token (derived from the node id it claims, nodes/node-credentials.ts) as `authorization: Bearer`.

import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect';
import { HeartbeatResponseSchema, NodeRegistry } from '@cove/contracts/edge';
import { EdgeError } from '../errors.js';
import type { NodeCredentials } from '../nodes/node-credentials.js';
import { NODE_ID_RE, type NodeDirectory } from '../nodes/node-directory.js';
import { bearerToken } from '@cove/auth-tokens';

/** Register the NodeRegistry service on a Connect router. */
export function registerHeartbeatService(router: ConnectRouter, deps: { credentials: NodeCredentials; directory: NodeDirectory }): void {
  router.service(NodeRegistry, {
    async heartbeat(req, ctx) {
      const auth = ctx.requestHeader.get('authorization');
      if (!auth) throw new ConnectError('missing node token', Code.Unauthenticated);
      const nodeId = req.info?.nodeId ?? '';
      if (!NODE_ID_RE.test(nodeId)) throw new ConnectError('info.node_id must match ^[A-Za-z0-9._-]{1,128}$', Code.InvalidArgument);
      // The token must be the one of the node id this beat speaks for: node B's token cannot register node A.
      if (!deps.credentials.verify(nodeId, bearerToken(auth) ?? '')) {
        throw new ConnectError('invalid node token for this node id', Code.PermissionDenied);
      }
      try {
        await deps.directory.heartbeat(req);
      } catch (err) {
        if (err instanceof EdgeError && err.code === 'invalid_argument') throw new ConnectError(err.message, Code.InvalidArgument);
        throw new ConnectError('heartbeat could not be recorded', Code.Unavailable, undefined, undefined, err);
      }
      return create(HeartbeatResponseSchema, { intervalMs: deps.directory.options.intervalMs });
    },
  });
}
