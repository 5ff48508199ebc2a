// The RPC boundary: node-token authentication on every call, and the one place where the orchestrator's
// typed errors become Connect codes. Unknown errors are logged with their cause and answered as
// Internal with a generic message, so no internal detail reaches the caller.

import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { isNoSpace, NodeDiskFull, OrchestratorError, PermissionDenied, Unauthenticated, type OrchestratorErrorCode } from '../errors.js';
import { tokensEqual } from '@cove/auth-tokens';
import { NODE_ERROR_CODE_HEADER } from '@cove/contracts/link';

const toConnect: Record<OrchestratorErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  sandbox_not_found: Code.NotFound,
  sandbox_exists: Code.AlreadyExists,
  template_not_found: Code.NotFound,
  template_not_ready: Code.Unavailable,
  node_draining: Code.ResourceExhausted,
  node_full: Code.ResourceExhausted,
  node_disk_full: Code.ResourceExhausted,
  envd_init_failed: Code.Unavailable,
  sandbox_busy: Code.FailedPrecondition,
  checkpoint_failed: Code.FailedPrecondition,
  snapshot_not_found: Code.NotFound,
  snapshot_corrupt: Code.DataLoss,
  // Not DATA_LOSS: the files were verified, CRIU could not bring them back here; another node may.
  snapshot_restore_failed: Code.Aborted,
  volumes_unavailable: Code.FailedPrecondition,
};

/** Requires `authorization: Bearer <node token>`: missing → Unauthenticated, wrong → PermissionDenied. */
export function authInterceptor(nodeToken: string): Interceptor {
  return (next) => async (req) => {
    const header = req.header.get('authorization');
    if (!header) throw new Unauthenticated();
    const m = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (!m) throw new Unauthenticated();
    if (!tokensEqual(m[1]!, nodeToken)) throw new PermissionDenied();
    return next(req);
  };
}

/** Outermost interceptor: maps errors once and logs failures with the procedure name. */
export function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      throw toConnectError(err, log.child({ procedure: req.method.name }));
    }
  };
}

export function toConnectError(err: unknown, log: Logger): ConnectError {
  if (err instanceof OrchestratorError) {
    const code = toConnect[err.code];
    if (code === Code.Unavailable || err.cause) log.warn({ err }, 'rpc failed');
    else log.debug({ code: err.code, message: err.message }, 'rpc rejected');
    // envd failures keep a generic message; the cause stays in the log.
    // The structured code travels too (NODE_ERROR_CODE_HEADER), so a caller tells e.g. `template_not_ready` from other
    // UNAVAILABLEs without reading the message.
    return new ConnectError(err.code === 'envd_init_failed' ? 'sandbox failed to start' : err.message, code, { [NODE_ERROR_CODE_HEADER]: err.code });
  }
  if (err instanceof ConnectError) return err;
  // A write that found the node's disk full, wherever it happened: the caller may try another node.
  if (isNoSpace(err)) return toConnectError(new NodeDiskFull('this call', { cause: err }), log);
  log.error({ err }, 'rpc failed with an unexpected error');
  return new ConnectError('internal error', Code.Internal);
}
