import type { ConnectRouter, Interceptor } from '@connectrpc/connect';
import { ConnectError, Code } from '@connectrpc/connect';
import { Filesystem } from '@cove/contracts/envd/filesystem';
import { Process } from '@cove/contracts/envd/process';
import { filesystemService, type FilesystemDeps } from '../fs/filesystem-service.js';
import { hasValidAccessToken } from '../http/request-auth.js';
import { processService, type ProcessDeps } from '../process/process-service.js';
import type { EnvdState } from '../state.js';

/** Every RPC needs `X-Access-Token` once /init has set one. */
export function accessTokenInterceptor(state: EnvdState): Interceptor {
  return (next) => async (req) => {
    if (!hasValidAccessToken({ header: req.header }, state)) {
      throw new ConnectError('missing or invalid X-Access-Token', Code.Unauthenticated);
    }
    return next(req);
  };
}

/** Registers E2B's envd services on a Connect router. */
export function registerRoutes(deps: FilesystemDeps & ProcessDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(Process, processService(deps));
    router.service(Filesystem, filesystemService(deps));
  };
}
