// One HTTP exchange forwarded to an upstream with node:http: the request body streams up and the response
// body streams down through pipe(), so backpressure holds both ways and nothing is buffered whole (50 MB
// uploads cost a few socket buffers). An aborted client destroys the upstream request and a dying upstream
// destroys the client response, so neither side keeps a half-dead exchange open. Responses without a
// Content-Length (server-sent events, chunked downloads) get their headers flushed at once so a stream that
// is quiet for minutes is still visibly open.

import { Agent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
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

let sharedAgent: Agent | undefined;

/** Forward `req` to `opts.target` and stream the answer into `res`. Resolves when the exchange is over. */
export function forwardHttp(req: IncomingMessage, res: ServerResponse, opts: ForwardHttpOptions): Promise<ForwardResult> {
  const target = typeof opts.target === 'string' ? new URL(opts.target) : opts.target;
  const idleMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
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

    up.on('error', (err) => {
      if (res.headersSent || res.destroyed) {
        finish({ outcome: res.destroyed && !res.headersSent ? 'client_aborted' : 'upstream_failed', error: err });
        res.destroy();
        return;
      }
      finish({ outcome: 'upstream_failed', error: err });
      const failure = classifyUpstreamError(err);
      if (opts.onError) opts.onError(err, failure);
      else sendProxyError(res, 502, proxyErrorBody(502, 'The upstream is unreachable'));
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
