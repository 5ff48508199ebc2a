// The edge's API port: REST (HTTP/1.1 and HTTP/2), the NodeRegistry heartbeat service (Connect/gRPC on
// h2c, Connect on HTTP/1.1 too) and the control link (gRPC pass-through on h2c), behind one port mux.

import { createServer as createHttp1Server, type Server as Http1Server } from 'node:http';
import { createServer as createHttp2Server, type Http2Server, type ServerHttp2Session } from 'node:http2';
import type { Server, Socket } from 'node:net';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { Logger } from 'pino';
import { handleControlLink, isControlLinkPath, type ControlLinkDeps } from '../control-link/control-link.js';
import { replyRpcError, GrpcCode } from '../control-link/rpc-reply.js';
import type { NodeDirectory } from '../nodes/node-directory.js';
import { registerHeartbeatService } from './heartbeat-service.js';
import { createPortMux } from './port-mux.js';
import { createRestApi, type RestApiDeps } from './rest-api.js';

/** What the API port needs. */
export interface ApiServerDeps {
  rest: RestApiDeps;
  controlLink: ControlLinkDeps;
  nodeToken: string;
  directory: NodeDirectory;
  log: Logger;
}

/** The API port's servers; `server` is the one to listen on. */
export interface ApiServer {
  server: Server;
  /** Stop accepting, let in-flight requests finish for up to `graceMs`, then cut what is left. */
  close(graceMs: number): Promise<void>;
}

/** Build (not listen) the API port. */
export function createApiServer(deps: ApiServerDeps): ApiServer {
  const rest = createRestApi(deps.rest);
  const connect = connectNodeAdapter({
    routes: (router) => registerHeartbeatService(router, { nodeToken: deps.nodeToken, directory: deps.directory }),
    fallback: rest,
  });

  const http1: Http1Server = createHttp1Server({ keepAliveTimeout: 65_000 }, connect);
  // 10 MB per session (Node's default) is tight for several multi-MB control-link messages in flight.
  const http2: Http2Server = createHttp2Server({ maxSessionMemory: 64 });
  http2.on('request', (req, res) => {
    if (isControlLinkPath(req.headers[':path'])) {
      handleControlLink(req, res, deps.controlLink).catch((err: unknown) => {
        deps.log.error({ err }, 'control link failed');
        replyRpcError(req, res, GrpcCode.INTERNAL, 'internal error');
      });
      return;
    }
    connect(req, res);
  });

  const sessions = new Set<ServerHttp2Session>();
  http2.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  const sockets = new Set<Socket>();
  const server = createPortMux({
    http1: (socket) => http1.emit('connection', socket),
    http2: (socket) => http2.emit('connection', socket),
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  return {
    server,
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      http1.closeIdleConnections();
      for (const s of sessions) s.close();
      let timer: NodeJS.Timeout | undefined;
      const drained = new Promise<void>((resolve) => {
        const check = (): void => {
          if (sockets.size === 0) resolve();
        };
        for (const s of sockets) s.once('close', check);
        check();
        timer = setTimeout(resolve, graceMs);
      });
      await drained;
      clearTimeout(timer);
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
