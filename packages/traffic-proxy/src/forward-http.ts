// One HTTP exchange forwarded to an upstream with node:http: the request body streams up and the response
// body streams down through pipe(), so backpressure holds both ways and nothing is buffered whole (50 MB
// uploads cost a few socket buffers). An aborted client destroys the upstream request and a dying upstream
// destroys the client response, so neither side keeps a half-dead exchange open. Responses without a
// Content-Length (server-sent events, chunked downloads) get their headers flushed at once so a stream that
// is quiet for minutes is still visibly open.
//
// When the caller gives an undici dispatcher, two kinds of request go through it instead, because undici's
// HTTP/1.1 client costs about two thirds of node:http's per exchange (docs/performance.md, "Proxy"):
// - requests without a body: nothing could be held back;
// - requests with a small, fully declared body (Content-Length ≤ MAX_BUFFERED_BODY_BYTES, not chunked, no
//   Expect): read whole first, bounded in size and time like nginx's client body buffer, then sent with the
//   head in one write. That is every E2B SDK envd call (Connect RPC POSTs of a few hundred bytes). Nothing
//   goes upstream until the client has sent all it declared, so a client that stops, lies about its length
//   or leaves mid-body costs the upstream nothing.
// Other bodies stay on node:http, head first: undici holds a streamed body's head until the first chunk, which
// would break clients that wait for the response before they send (see the head-first test), and a large
// upload must not be held in memory.

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

/**
 * Largest request body the proxy reads whole before forwarding (to take the undici path). nginx buffers
 * 8–16 KiB by default; 64 KiB covers every SDK envd call with room, and bounds what one request can pin.
 */
export const MAX_BUFFERED_BODY_BYTES = 64 * 1024;

/**
 * Longest a buffered body may take to arrive in full (the idle limit, if shorter, wins). A total, not a
 * per-chunk, limit: a client trickling a byte a second is never idle yet would hold the buffer forever.
 * 64 KiB in 60 s is ~1 KiB/s; nginx's client_body_timeout is also 60 s.
 */
export const BUFFERED_BODY_TIMEOUT_MS = 60_000;

/** Raised when a buffered request body did not arrive within its time limit; the client gets a 408. */
export class ClientBodyTimeout extends Error {
  readonly code = 'CLIENT_BODY_TIMEOUT';
  constructor(ms: number) {
    super(`request body not complete after ${ms} ms`);
    this.name = 'ClientBodyTimeout';
  }
}

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
  /**
   * undici pool ({@link createUpstreamDispatcher}) for requests without a body or with a small declared one
   * ({@link MAX_BUFFERED_BODY_BYTES}); without it, all go through `agent`.
   */
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
  /** `client_timeout`: a buffered body did not arrive in time ({@link ClientBodyTimeout}); nothing went upstream. */
  outcome: 'completed' | 'client_aborted' | 'client_timeout' | 'upstream_failed';
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

/**
 * The declared length of a body the proxy may read whole, or undefined when it must stream: chunked, an
 * `Expect` (the client waits for an interim answer), or over the bound. Node's parser has already refused
 * malformed or conflicting Content-Length and Transfer-Encoding fields, and never hands over more body
 * bytes than declared (what follows is parsed as the next request).
 */
function bufferedBodyLength(req: IncomingMessage): number | undefined {
  if (req.headers['transfer-encoding'] !== undefined || req.headers.expect !== undefined) return undefined;
  const declared = req.headers['content-length'];
  if (declared === undefined || !/^\d{1,7}$/.test(declared)) return undefined;
  const length = Number(declared);
  return length <= MAX_BUFFERED_BODY_BYTES ? length : undefined;
}

/** Forward `req` to `opts.target` and stream the answer into `res`. Resolves when the exchange is over. */
export function forwardHttp(req: IncomingMessage, res: ServerResponse, opts: ForwardHttpOptions): Promise<ForwardResult> {
  const target = targetUrl(opts.target);
  const idleMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const { dispatcher } = opts;
  if (dispatcher) {
    if (!hasBody(req)) return dispatchUndici(req, res, opts, dispatcher, target, idleMs, null);
    const length = bufferedBodyLength(req);
    if (length !== undefined) {
      return readBody(req, res, length, Math.min(idleMs, BUFFERED_BODY_TIMEOUT_MS)).then((body) =>
        Buffer.isBuffer(body) ? dispatchUndici(req, res, opts, dispatcher, target, idleMs, body) : body,
      );
    }
  }
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
    /** The upstream answered in full before the body was all sent: the rest is dropped, the exchange is over. */
    let bodyDropped = false;

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
      upRes.on('end', () => {
        // An answer complete before the request body (a 507 or 413 while an upload still streams): node:http's
        // client stops relaying its socket's 'drain' once the response is complete, so a body waiting on it
        // would stall for good, and the client's connection with it (behind HAProxy, the requests the client
        // sends next on it too). The rest of the body is read and dropped, as Node's server does with a body
        // nobody reads, and the upstream connection, which still expects that body, is closed.
        if (up.writableEnded) return;
        bodyDropped = true;
        req.unpipe(up);
        up.destroy();
        req.resume();
      });
      upRes.on('close', () => {
        if (!upRes.complete) {
          finish({ outcome: 'upstream_failed', status, error: new Error('upstream closed the response early') });
          res.destroy();
        } else {
          finish({ outcome: 'completed', status });
        }
      });
    });

    up.on('error', (err) => {
      if (!bodyDropped) failUpstream(res, opts, finish, err);
    });

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

/**
 * Read the request body whole: exactly `length` bytes within `timeoutMs`. Anything else — the client leaving
 * or closing early (short body), its connection failing, the time running out — ends the exchange here, so
 * not a byte of a body the client did not fully send reaches the upstream. Resolves with the body, or with
 * the exchange's result when it ended.
 */
function readBody(req: IncomingMessage, res: ServerResponse, length: number, timeoutMs: number): Promise<Buffer | ForwardResult> {
  // A caller may have awaited (routing, a resume) before forwarding; a client gone by then emits no more events.
  if (res.destroyed || req.destroyed) return Promise.resolve({ outcome: 'client_aborted' });
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const done = (value: Buffer | ForwardResult): void => {
      clearTimeout(timer);
      req.off('data', onData).off('end', onEnd).off('error', onAbort).off('close', onAbort);
      res.off('close', onAbort);
      resolve(value);
    };
    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      // Node's parser never delivers more than declared; if it ever did, the framing is not to be trusted.
      if (received > length) {
        res.destroy();
        done({ outcome: 'client_aborted', error: new Error('request body longer than its Content-Length') });
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      if (received === length) done(Buffer.concat(chunks, received));
      else onAbort();
    };
    // 'close' before 'end' (or an 'error'): the client closed or reset mid-body; Node marks the request aborted.
    const onAbort = (): void => {
      res.destroy();
      done({ outcome: 'client_aborted' });
    };
    const timer = setTimeout(() => {
      const error = new ClientBodyTimeout(timeoutMs);
      // Whatever else the client sends is discarded, and the connection closes once the answer is out:
      // the rest of this body cannot be told from a next request.
      req.off('data', onData).resume();
      res.setHeader('connection', 'close');
      sendProxyError(res, 408, proxyErrorBody(408, 'The request body did not arrive in time'));
      done({ outcome: 'client_timeout', error });
    }, timeoutMs);
    req.on('data', onData).on('end', onEnd).on('error', onAbort).on('close', onAbort);
    res.on('close', onAbort);
  });
}

/**
 * The {@link forwardHttp} exchange through an undici dispatcher (same outcomes), for a request without a body
 * (`body` null) or with its body already read whole.
 */
function dispatchUndici(req: IncomingMessage, res: ServerResponse, opts: ForwardHttpOptions, dispatcher: Dispatcher, target: URL, idleMs: number, body: Buffer | null): Promise<ForwardResult> {
  if (res.destroyed) return Promise.resolve({ outcome: 'client_aborted' });
  return new Promise<ForwardResult>((resolve) => {
    let result: ForwardResult | undefined;
    const finish = (r: ForwardResult): void => {
      result ??= r;
    };
    let controller: Dispatcher.DispatchController | undefined;
    let status: number | undefined;
    // A body-less request has nothing after the head (hasBody); draining keeps the connection usable regardless.
    if (body === null) req.resume();
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
        // With the head in one write; undici checks it against the Content-Length header.
        body,
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
