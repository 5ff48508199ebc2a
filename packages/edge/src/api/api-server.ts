// The edge's API port: REST (HTTP/1.1 and HTTP/2), the NodeRegistry heartbeat service (Connect/gRPC on
// h2c, Connect on HTTP/1.1 too) and the control link (gRPC pass-through on h2c), behind one port mux.
// With TLS configured there is no mux: one node:http2 secure server negotiates `h2` or `http/1.1` by ALPN
// (allowHTTP1) and hands both kinds of request to the same handler. `PUT /storage/upload?token=…` (the
// local storage driver's upload URLs) is served here too, before Connect, on either protocol.

import { createServer as createHttp1Server, type Server as Http1Server } from 'node:http';
import {
  createSecureServer,
  createServer as createHttp2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { Logger } from 'pino';
import { handleControlLink, isControlLinkPath, type ControlLinkDeps } from '../control-link/control-link.js';
import { replyRpcError, GrpcCode } from '../control-link/rpc-reply.js';
import type { EdgeTlsConfig } from '../config.js';
import type { NodeCredentials } from '../nodes/node-credentials.js';
import type { NodeDirectory } from '../nodes/node-directory.js';
import { UPLOAD_PATH, type TemplateFiles } from '../storage/template-files.js';
import { registerHeartbeatService } from './heartbeat-service.js';
import { createPortMux } from './port-mux.js';
import { createRestApi, type RestApiDeps } from './rest-api.js';
import type { EdgeTelemetry } from '../telemetry/edge-telemetry.js';

/** What the API port needs. */
export interface ApiServerDeps {
  rest: RestApiDeps;
  controlLink: ControlLinkDeps;
  credentials: NodeCredentials;
  directory: NodeDirectory;
  /** Serves `PUT /storage/upload` (local storage driver). */
  uploads: Pick<TemplateFiles, 'handleUpload'>;
  /** Undefined = cleartext (h2c + HTTP/1.1 sniffed). */
  tls?: EdgeTlsConfig | undefined;
  /** Request metrics and `GET /metrics` (cluster token). */
  telemetry?: EdgeTelemetry;
  /** An outbound control link with no traffic this long is dead (the control plane pings it); default 45 s. */
  linkIdleMs?: number;
  log: Logger;
}

/** The API port's servers; `server` is the one to listen on. */
export interface ApiServer {
  server: Server;
  /**
   * Serve the API port's HTTP/2 (cleartext: the connection is already TLS to the control plane when it is not on
   * loopback) on a connection this edge dialled — the outbound-only control link (outbound-dialer.ts).
   */
  adoptLink(socket: Duplex): void;
  /** Stop accepting, let in-flight requests finish for up to `graceMs`, then cut what is left. */
  close(graceMs: number): Promise<void>;
}


function isUploadPath(url: string | undefined): boolean {
  if (url === undefined || !url.startsWith(UPLOAD_PATH)) return false;
  const rest = url.slice(UPLOAD_PATH.length);
  return rest === '' || rest.startsWith('?');
}

/** Build (not listen) the API port. */
export function createApiServer(deps: ApiServerDeps): ApiServer {
  const rest = createRestApi(deps.rest);
  const connect = connectNodeAdapter({
    routes: (router) => registerHeartbeatService(router, { credentials: deps.credentials, directory: deps.directory }),
    fallback: rest,
  });

  // 10 MB per session (Node's default) is tight for several multi-MB control-link messages in flight.
  const maxSessionMemory = 64;
  const onRequest = (req: Http2ServerRequest | IncomingMessage, res: Http2ServerResponse | ServerResponse): void => {
    if (deps.telemetry?.handle(req, res, deps.rest.clusterToken, deps.rest.auth)) return;
    if (isUploadPath(req.url)) {
      // createUploadHandler uses only what node:http and the HTTP/2 compatibility API have in common.
      deps.uploads.handleUpload(req as IncomingMessage, res as ServerResponse);
      return;
    }
    if (req.httpVersionMajor === 2 && isControlLinkPath(req.headers[':path'] as string | undefined)) {
      const [h2req, h2res] = [req as Http2ServerRequest, res as Http2ServerResponse];
      handleControlLink(h2req, h2res, deps.controlLink).catch((err: unknown) => {
        deps.log.error({ err }, 'control link failed');
        replyRpcError(h2req, h2res, GrpcCode.INTERNAL, 'internal error');
      });
      return;
    }
    connect(req as IncomingMessage, res as ServerResponse);
  };

  // Node's 5-minute whole-request limit would cut multi-GB COPY uploads; headers keep their 60 s limit and
  // uploads an idle timeout (TemplateFiles.handleUpload).
  const requestTimeout = 0;
  let http1: Http1Server | undefined;
  let server: Server;
  const http2 = deps.tls
    ? createSecureServer({
        allowHTTP1: true,
        maxSessionMemory,
        cert: deps.tls.cert,
        key: deps.tls.key,
        minVersion: 'TLSv1.2',
        ...(deps.tls.clientCa ? { ca: deps.tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
      })
    : createHttp2Server({ maxSessionMemory });
  http2.on('request', onRequest);
  (http2 as unknown as { requestTimeout: number }).requestTimeout = requestTimeout;
  if (deps.tls) {
    server = http2 as unknown as Server;
    http2.on('tlsClientError', (err: Error) => deps.log.debug({ err }, 'TLS handshake with a client failed'));
  } else {
    http1 = createHttp1Server({ keepAliveTimeout: 65_000, requestTimeout }, onRequest);
    const h1 = http1;
    server = createPortMux({
      http1: (socket) => h1.emit('connection', socket),
      http2: (socket) => http2.emit('connection', socket),
    });
  }

  // The outbound control link's connections: the same handler, HTTP/2 only (the control plane speaks nothing else
  // on it). A link with no traffic at all for linkIdleMs is dead (the control plane pings it): cut it,
  // and the dialer re-dials.
  const linkIdleMs = deps.linkIdleMs ?? 45_000;
  const links = createHttp2Server({ maxSessionMemory, settings: { enablePush: false } });
  links.on('request', onRequest);
  const sessions = new Set<ServerHttp2Session>();
  const track = (s: ServerHttp2Session): void => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  };
  http2.on('session', track);
  links.on('session', (s: ServerHttp2Session) => {
    track(s);
    // Not Http2Session.setTimeout: PING frames do not count as activity there, so an idle link would be cut.
    let lastSeen = Date.now();
    const seen = (): void => {
      lastSeen = Date.now();
    };
    s.on('ping', seen);
    s.on('stream', seen);
    const watch = setInterval(() => {
      if (Date.now() - lastSeen > linkIdleMs) s.destroy(new Error('control link silent'));
    }, linkIdleMs / 3);
    watch.unref();
    s.on('close', () => clearInterval(watch));
    s.on('error', (err) => deps.log.warn({ err: err.message }, 'control link session error'));
  });
  // HTTP/1.1 (over TLS or cleartext): requests in flight per socket, so close() can cut idle keep-alive sockets at
  // once instead of waiting out the grace for a client's idle pool (the cleartext server gets its sockets from the
  // port mux, so its own closeIdleConnections() does not see them).
  const http1Busy = new Map<Socket, number>();
  let closing = false;
  const trackHttp1 = (req: Http2ServerRequest | IncomingMessage, res: Http2ServerResponse | ServerResponse): void => {
    if (req.httpVersionMajor !== 1) return;
    const socket = req.socket as Socket;
    http1Busy.set(socket, (http1Busy.get(socket) ?? 0) + 1);
    res.once('close', () => {
      const n = (http1Busy.get(socket) ?? 1) - 1;
      http1Busy.set(socket, n);
      if (closing && n === 0) socket.destroy();
    });
    socket.once('close', () => http1Busy.delete(socket));
  };
  http2.on('request', trackHttp1);
  http1?.on('request', trackHttp1);
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  return {
    server,
    adoptLink(socket) {
      // Over TLS the link is a TLSSocket whose ALPN said nothing (the handshake was an HTTP/1.1 upgrade); the
      // HTTP/2 server would take it for an unknown protocol and drop it. It carries h2 from here on.
      if ((socket as { alpnProtocol?: unknown }).alpnProtocol === false) (socket as { alpnProtocol?: unknown }).alpnProtocol = 'h2';
      links.emit('connection', socket);
    },
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      closing = true;
      http1?.closeIdleConnections();
      for (const [socket, n] of http1Busy) if (n === 0) socket.destroy();
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
