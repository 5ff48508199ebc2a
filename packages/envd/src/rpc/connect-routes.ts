import type { ConnectRouter, Interceptor } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { ConnectError, Code } from '@connectrpc/connect';
import { Filesystem } from '@cove/contracts/envd/filesystem';
import { Process } from '@cove/contracts/envd/process';
import { filesystemService, type FilesystemDeps } from '../fs/filesystem-service.js';
import { hasValidAccessToken } from '../http/request-auth.js';
import { processService, type ProcessDeps } from '../process/process-service.js';
import type { LogRing } from '../log-ring.js';
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

function logFailure(log: Logger, method: string, err: unknown, ring?: LogRing): void {
  const ce = ConnectError.from(err);
  // A client that goes away is not envd's error; everything else is what the sandbox's log should show.
  if (ce.code !== Code.Canceled) ring?.record(ce.code === Code.Internal || ce.code === Code.Unknown ? 'error' : 'warn', ce.rawMessage, { method, code: Code[ce.code] });
  if (ce.code === Code.Internal || ce.code === Code.Unknown) log.error({ method, err: ce.cause ?? err }, ce.message);
  else log.debug({ method, code: Code[ce.code] }, ce.message);
}

/** Logs each failed RPC once, with the internal cause for `internal` errors (the client only sees the message). */
export function errorLogInterceptor(log: Logger, ring?: LogRing): Interceptor {
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    try {
      const res = await next(req);
      if (!res.stream) return res;
      const source = res.message;
      async function* logged(): AsyncGenerator<unknown> {
        try {
          yield* source;
        } catch (e) {
          logFailure(log, method, e, ring);
          throw e;
        }
      }
      return { ...res, message: logged() } as typeof res;
    } catch (e) {
      logFailure(log, method, e, ring);
      throw e;
    }
  };
}

/** Registers E2B's envd services on a Connect router. */
export function registerRoutes(deps: FilesystemDeps & ProcessDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(Process, processService(deps));
    router.service(Filesystem, filesystemService(deps));
  };
}
