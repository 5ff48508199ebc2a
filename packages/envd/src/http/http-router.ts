import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { verifyFileSignature } from '../auth/file-signature.js';
import { EnvdError } from '../errors.js';
import type { EnvdState } from '../state.js';
import { ENVD_VERSION } from '../version.js';
import { guardHttp, handleDownload, handleUpload, type FilesDeps } from './files-route.js';
import { ENVD_ACCESS_TOKEN_HEADER, ENVD_INIT_PATH, ENVD_VERSION_HEADER } from '@cove/contracts/sandbox';
import { ENVD_LOGS_MAX_WAIT_MS, ENVD_LOGS_PATH, ENVD_LOGS_WAIT_PATH, ENVD_LOG_LIMITS, type EnvdLogsWaitReply } from '@cove/contracts/telemetry';
import type { LogRing } from '../log-ring.js';
import { checkInitToken, handleInit } from './init-route.js';
import { sendJson } from './json-reply.js';
import type { MetricsReader } from './metrics.js';
import { hasValidAccessToken } from './request-auth.js';

export interface HttpDeps extends FilesDeps {
  initToken: string | undefined;
  metrics: MetricsReader;
  ring: LogRing;
}

function intParam(q: URLSearchParams, name: string, dflt: number, max: number): number {
  const raw = q.get(name);
  if (raw === null) return dflt;
  if (!/^\d{1,15}$/.test(raw)) throw new EnvdError('invalid_argument', `${name} must be a non-negative integer`);
  return Math.min(Number(raw), max);
}

type Next = () => void;

/**
 * Plain-HTTP routes (`/health`, `/init`, `/files`, `/envs`, `/metrics`); everything else
 * is handed to `next` (the Connect adapter). Returns after starting the response.
 */
export function httpRouter(deps: HttpDeps): (req: IncomingMessage, res: ServerResponse, next: Next) => void {
  const { state, log } = deps;
  return (req, res, next) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://envd');
    } catch {
      sendJson(res, 400, { code: 400, message: 'malformed request URL' });
      return;
    }
    const path = url.pathname;
    const method = req.method ?? 'GET';

    if (path === '/health') {
      if (method !== 'GET' && method !== 'HEAD') return methodNotAllowed(res);
      res.writeHead(204, { [ENVD_VERSION_HEADER]: ENVD_VERSION, 'cache-control': 'no-store' });
      res.end();
      return;
    }
    if (path === ENVD_INIT_PATH) {
      if (method !== 'POST') return methodNotAllowed(res);
      void guardHttp(res, log, () => handleInit(req, res, { state, initToken: deps.initToken, ring: deps.ring }), deps.ring);
      return;
    }
    if (path === ENVD_LOGS_PATH) {
      if (method !== 'GET') return methodNotAllowed(res);
      void guardHttp(res, log, async () => {
        checkInitToken(req, deps.initToken);
        const after = intParam(url.searchParams, 'after', 0, Number.MAX_SAFE_INTEGER);
        const limit = intParam(url.searchParams, 'limit', ENVD_LOG_LIMITS.maxEntries, ENVD_LOG_LIMITS.maxEntries);
        sendJson(res, 200, deps.ring.read(after, limit), { 'cache-control': 'no-store' });
      }, deps.ring);
      return;
    }
    if (path === ENVD_LOGS_WAIT_PATH) {
      if (method !== 'GET') return methodNotAllowed(res);
      void guardHttp(res, log, async () => {
        checkInitToken(req, deps.initToken);
        const after = intParam(url.searchParams, 'after', 0, Number.MAX_SAFE_INTEGER);
        const wait = intParam(url.searchParams, 'wait', 0, ENVD_LOGS_MAX_WAIT_MS);
        // The node going away ends the wait: no timer or waiter outlives its request.
        const gone = new AbortController();
        res.once('close', () => gone.abort());
        await deps.ring.waitBeyond(after, wait, gone.signal);
        if (gone.signal.aborted) return;
        const reply: EnvdLogsWaitReply = { last: deps.ring.last };
        sendJson(res, 200, reply, { 'cache-control': 'no-store' });
      }, deps.ring);
      return;
    }
    if (path === '/files') {
      if (method !== 'GET' && method !== 'POST') return methodNotAllowed(res);
      void guardHttp(res, log, async () => {
        checkFilesAuth(req, url.searchParams, method === 'GET' ? 'read' : 'write', state);
        if (method === 'GET') await handleDownload(req, res, url.searchParams, deps);
        else await handleUpload(req, res, url.searchParams, deps);
      }, deps.ring);
      return;
    }
    if (path === '/envs' || path === '/metrics') {
      if (method !== 'GET') return methodNotAllowed(res);
      void guardHttp(res, log, async () => {
        if (!hasValidAccessToken(req, state)) throw new EnvdError('unauthenticated', 'missing or invalid X-Access-Token');
        if (path === '/envs') sendJson(res, 200, state.envVars);
        else sendJson(res, 200, await deps.metrics.read());
      }, deps.ring);
      return;
    }
    next();
  };
}

function methodNotAllowed(res: ServerResponse): void {
  sendJson(res, 405, { code: 405, message: 'method not allowed' });
}

/** `/files` accepts the access token or, instead, a valid URL signature. */
function checkFilesAuth(req: IncomingMessage, q: URLSearchParams, op: 'read' | 'write', state: EnvdState): void {
  if (state.accessToken === undefined) return;
  const header = req.headers[ENVD_ACCESS_TOKEN_HEADER];
  if (header !== undefined) {
    if (hasValidAccessToken(req, state)) return;
    throw new EnvdError('unauthenticated', 'invalid X-Access-Token');
  }
  const signature = q.get('signature');
  if (!signature) throw new EnvdError('unauthenticated', 'missing X-Access-Token or signature');
  verifyFileSignature(
    { path: q.get('path') ?? '', username: q.get('username') ?? '', signature, expiration: q.get('signature_expiration') },
    op,
    state.accessToken,
    Date.now(),
  );
}
