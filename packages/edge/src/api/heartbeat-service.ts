// cove.edge.v1.NodeRegistry/Heartbeat: orchestrators register and keep themselves registered, with the node
// token as `authorization: Bearer`.

import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect';
import { HeartbeatResponseSchema, NodeRegistry } from '@cove/contracts/edge';
import { EdgeError } from '../errors.js';
import type { NodeDirectory } from '../nodes/node-directory.js';
import { bearerToken, tokensEqual } from '@cove/auth-tokens';

/** Register the NodeRegistry service on a Connect router. */
export function registerHeartbeatService(router: ConnectRouter, deps: { nodeToken: string; directory: NodeDirectory }): void {
  router.service(NodeRegistry, {
    async heartbeat(req, ctx) {
      const auth = ctx.requestHeader.get('authorization');
      if (!auth) throw new ConnectError('missing node token', Code.Unauthenticated);
      if (!tokensEqual(bearerToken(auth) ?? '', deps.nodeToken)) throw new ConnectError('invalid node token', Code.PermissionDenied);
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
