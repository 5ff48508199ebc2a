import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { Logger } from 'pino';
import type { EnvdConfig } from './config.js';
import { WatcherRegistry } from './fs/watcher-registry.js';
import { httpRouter } from './http/http-router.js';
import { MetricsReader } from './http/metrics.js';
import { LogRing } from './log-ring.js';
import { ProcessTable } from './process/process-table.js';
import { accessTokenInterceptor, errorLogInterceptor, registerRoutes } from './rpc/connect-routes.js';
import { EnvdState } from './state.js';
import { UserDb } from './users/user-db.js';
import { ENVD_VERSION } from './version.js';

/** A built envd: the HTTP server (not listening yet) and its runtime parts. */
export interface Envd {
  readonly server: Server;
  readonly state: EnvdState;
  /** What envd records for the sandbox's logs. */
  readonly ring: LogRing;
  /** Stops watchers and kills child processes; call after `server.close()`. */
  shutdown(): void;
}

export interface EnvdDeps {
  logger: Logger;
  /** uid envd runs as; defaults to the current process's. */
  selfUid?: number;
}

// E2B's envd allows any origin (browser SDK); the Connect and envd headers must pass preflight.
const CORS_HEADERS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'connect-protocol-version, grpc-status, grpc-message, x-envd-version, location, cache-control, content-encoding',
};
const PREFLIGHT_HEADERS = {
  ...CORS_HEADERS,
  'access-control-allow-methods': 'GET, POST, OPTIONS',
  'access-control-allow-headers': '*',
  'access-control-max-age': '7200',
};

/** Builds envd without listening (tests bind it to 127.0.0.1:0). */
export function buildEnvd(config: EnvdConfig, deps: EnvdDeps): Envd {
  const log = deps.logger;
  const state = new EnvdState();
  const users = new UserDb(config.passwdPath, config.groupPath);
  const ring = new LogRing();
  ring.record('info', 'envd started', { version: ENVD_VERSION });
  const processes = new ProcessTable(ring);
  const watchers = new WatcherRegistry();
  const selfUid = deps.selfUid ?? process.getuid?.() ?? 0;

  const rpc = connectNodeAdapter({
    routes: registerRoutes({ state, users, watchers, processes, selfUid, ring }),
    interceptors: [errorLogInterceptor(log, ring), accessTokenInterceptor(state)],
    // Newer SDKs may send fields this proto does not know yet; accept them.
    jsonOptions: { ignoreUnknownFields: true },
    readMaxBytes: 64 * 1024 * 1024,
  });
  const http = httpRouter({ state, users, log, maxUploadBytes: config.maxUploadBytes, initToken: config.initToken, metrics: new MetricsReader(), ring });

  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 640_000 }, (req: IncomingMessage, res: ServerResponse) => {
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    if (req.method === 'OPTIONS') {
      res.writeHead(204, PREFLIGHT_HEADERS);
      res.end();
      return;
    }
    for (const [k, v] of Object.entries(CORS_HEADERS)) res.setHeader(k, v);
    http(req, res, () => rpc(req, res));
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });

  return {
    server,
    state,
    ring,
    shutdown() {
      watchers.closeAll();
      processes.killAll();
    },
  };
}
