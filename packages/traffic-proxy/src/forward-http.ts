// One HTTP exchange forwarded to an upstream with node:http: the request body streams up and the response
// body streams down through pipe(), so backpressure holds both ways and nothing is buffered whole (50 MB
// uploads cost a few socket buffers). An aborted client destroys the upstream request and a dying upstream
// destroys the client response, so neither side keeps a half-dead exchange open. Responses without a
// Content-Length (server-sent events, chunked downloads) get their headers flushed at once so a stream that
// is quiet for minutes is still visibly open.
//
// A request without a body goes through an undici dispatcher instead when the caller gives one: undici's
// HTTP/1.1 client costs about two thirds of node:http's per exchange (docs/performance.md, "Proxy"), and
// with no body there is nothing it could hold back — it writes a body-less head at once, whereas for a
// streamed body it holds the head until the first chunk, which would break clients that wait for the
// response before they send (see the head-first test). Bodies therefore stay on node:http.

import { Agent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { Agent as UndiciAgent, type Dispatcher } from 'undici';
import { forwardResponseHeaders } from './forward-headers.js';
import { proxyErrorBody, sendProxyError } from './proxy-errors.js';
import { classifyUpstreamError, UpstreamIdleTimeout, type UpstreamFailure } from './upstream-error.js';

/**
 * Idle limit for a forwarded exchange: E2B's client proxy uses 610 s, just above common load-balancer idle
 * timeouts (600 s), so the proxy is never the first to cut a long-poll or a quiet stream.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 610_000;

/** Options of {@link forwardHttp}. */
export interface ForwardHttpOptions {
  /** Upstream origin, e.g. `http://10.0.0.5:5007`; the request keeps its own path and query. */
  target: URL | string;
  /** Request target sent upstream instead of `req.url` (e.g. an absolute-form target rewritten to origin form). */
  path?: string;
  /** Complete request headers for the upstream (see forwardRequestHeaders); Host is taken from here. */
  headers: OutgoingHttpHeaders;
  /** Connection pool; {@link createUpstreamAgent} makes a suitable one. Defaults to a shared keep-alive agent. */
  agent?: Agent;
  /** undici pool for requests without a body ({@link createUpstreamDispatcher}); without it, all go through `agent`. */
  dispatcher?: Dispatcher;
  /** Idle limit in both directions; default {@link DEFAULT_IDLE_TIMEOUT_MS}. */
  idleTimeoutMs?: number;
  /** Inspect or change the response status headers before they go to the client (e.g. add CORS). */
  onResponse?: (status: number, headers: OutgoingHttpHeaders) => void;
  /**
   * Called when the upstream fails before any response byte reached the client; it must answer `res`.
   * Default: 502 `{"message":"The upstream is unreachable","code":502}`. Failures after the response
   * started destroy the client connection instead (the status line is already out).
   */
  onError?: (err: unknown, failure: UpstreamFailure) => void;
}

/** How a forwarded exchange ended. */
export interface ForwardResult {
  outcome: 'completed' | 'client_aborted' | 'upstream_failed';
  /** Upstream status, when a response arrived. */
  status?: number;
  error?: unknown;
}

/** A keep-alive agent for proxy upstreams: unlimited sockets per origin, Nagle off for small frames. */
export function createUpstreamAgent(options: { maxFreeSockets?: number } = {}): Agent {
  return new Agent({ keepAlive: true, maxFreeSockets: options.maxFreeSockets ?? 256, noDelay: true, scheduling: 'lifo' });
}

/**
 * The undici counterpart of {@link createUpstreamAgent} for body-less requests: keep-alive, no pipelining (a
 * slow response must not hold up the next request of another client), Nagle off.
 */
export function createUpstreamDispatcher(): UndiciAgent {
  return new UndiciAgent({ connections: null, pipelining: 1, keepAliveTimeout: 60_000, connect: { noDelay: true } });
}

let sharedAgent: Agent | undefined;

/** Parsed upstream origins: a proxy sees a handful of node/sandbox origins, parsing each per request is waste. */
const targets = new Map<string, URL>();
function targetUrl(target: URL | string): URL {
  if (typeof target !== 'string') return target;
  let url = targets.get(target);
  if (url === undefined) {
    url = new URL(target);
    if (targets.size >= 1024) targets.clear();
    targets.set(target, url);
  }
  return url;
}

/** RFC 9112 §6.3: a request has a body exactly when it carries Transfer-Encoding or a non-zero Content-Length. */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** Forward `req` to `opts.target` and stream the answer into `res`. Resolves when the exchange is over. */
export function forwardHttp(req: IncomingMessage, res: ServerResponse, opts: ForwardHttpOptions): Promise<ForwardResult> {
  const target = targetUrl(opts.target);
  const idleMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  if (opts.dispatcher && !hasBody(req)) return dispatchBodiless(req, res, opts, opts.dispatcher, target, idleMs);
  const agent = opts.agent ?? (sharedAgent ??= createUpstreamAgent());

  return new Promise<ForwardResult>((resolve) => {
    let result: ForwardResult | undefined;
    const finish = (r: ForwardResult): void => {
      result ??= r;
    };

    const up = httpRequest({
      protocol: target.protocol,
      hostname: target.hostname.replace(/^\[|\]$/g, ''),
      port: target.port || 80,
      method: req.method,
      path: opts.path ?? req.url,
      headers: opts.headers,
      agent,
      setHost: false,
    });
    up.setTimeout(idleMs, () => up.destroy(new UpstreamIdleTimeout(idleMs)));

    up.on('response', (upRes) => {
      const status = upRes.statusCode ?? 502;
      const headers = forwardResponseHeaders(upRes.headers);
      opts.onResponse?.(status, headers);
      if (res.destroyed) {
        upRes.destroy();
        return;
      }
      res.writeHead(status, upRes.statusMessage, headers);
      if (headers['content-length'] === undefined) res.flushHeaders();
      upRes.pipe(res);
      upRes.on('close', () => {
        if (!upRes.complete) {
          finish({ outcome: 'upstream_failed', status, error: new Error('upstream closed the response early') });
          res.destroy();
        } else {
          finish({ outcome: 'completed', status });
        }
      });
    });

    up.on('error', (err) => failUpstream(res, opts, finish, err));

    // Send the request head now: a client may wait for the response headers before it sends any body
    // (bidirectional streams over HTTP/1.1), and node:http would otherwise hold the head for the first chunk.
    up.flushHeaders();

    req.on('error', () => up.destroy());
    res.on('close', () => {
      if (!res.writableFinished) {
        finish({ outcome: 'client_aborted' });
        up.destroy();
      }
      resolve(result ?? { outcome: 'completed' });
    });

    req.pipe(up);
  });
}

/**
 * An upstream failure, on either path: once the client has the head (or is gone) its response is cut, else it gets
 * the caller's error answer or a 502.
 */
function failUpstream(res: ServerResponse, opts: ForwardHttpOptions, finish: (r: ForwardResult) => void, err: Error, status?: number): void {
  if (res.headersSent || res.destroyed) {
    finish({ outcome: res.destroyed && !res.headersSent ? 'client_aborted' : 'upstream_failed', ...(status !== undefined ? { status } : {}), error: err });
    res.destroy();
    return;
  }
  finish({ outcome: 'upstream_failed', error: err });
  if (opts.onError) opts.onError(err, classifyUpstreamError(err));
  else sendProxyError(res, 502, proxyErrorBody(502, 'The upstream is unreachable'));
}

/** The {@link forwardHttp} exchange of a body-less request through an undici dispatcher (same outcomes). */
function dispatchBodiless(req: IncomingMessage, res: ServerResponse, opts: ForwardHttpOptions, dispatcher: Dispatcher, target: URL, idleMs: number): Promise<ForwardResult> {
  return new Promise<ForwardResult>((resolve) => {
    let result: ForwardResult | undefined;
    const finish = (r: ForwardResult): void => {
      result ??= r;
    };
    let controller: Dispatcher.DispatchController | undefined;
    let status: number | undefined;
    // Whatever the client sent after the head (nothing, by hasBody) is drained so the connection stays usable.
    req.resume();
    req.on('error', () => controller?.abort(new Error('client request failed')));
    res.on('close', () => {
      if (!res.writableFinished) {
        finish({ outcome: 'client_aborted' });
        controller?.abort(new Error('client went away'));
      }
      resolve(result ?? { outcome: 'completed' });
    });
    res.on('drain', () => controller?.resume());

    dispatcher.dispatch(
      {
        origin: target.origin,
        method: req.method as Dispatcher.HttpMethod,
        path: opts.path ?? req.url ?? '/',
        headers: opts.headers as Record<string, string | string[]>,
        body: null,
        // The same idle limit as the node:http path: waiting for the head, and between body chunks.
        headersTimeout: idleMs,
        bodyTimeout: idleMs,
      },
      {
        onRequestStart(c) {
          controller = c;
          if (res.destroyed) c.abort(new Error('client went away'));
        },
        onResponseStart(c, statusCode, upHeaders, statusMessage) {
          status = statusCode;
          const headers = forwardResponseHeaders(upHeaders);
          opts.onResponse?.(statusCode, headers);
          if (res.destroyed) {
            c.abort(new Error('client went away'));
            return;
          }
          res.writeHead(statusCode, statusMessage, headers);
          if (headers['content-length'] === undefined) res.flushHeaders();
        },
        onResponseData(c, chunk) {
          if (!res.write(chunk)) c.pause();
        },
        onResponseEnd() {
          finish({ outcome: 'completed', status: status ?? 502 });
          res.end();
        },
        onResponseError(_c, err) {
          failUpstream(res, opts, finish, err, status);
        },
      },
    );
  });
}
