// WebSocket (and any other HTTP/1.1 Upgrade) forwarding: after the request head is rewritten for the
// upstream, bytes are copied verbatim both ways, including the upstream's 101 (or refusal) response, so the
// proxy needs no WebSocket knowledge and frames pass byte for byte.

import { connect } from 'node:net';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { DEFAULT_IDLE_TIMEOUT_MS } from './forward-http.js';
import { proxyErrorBody, writeRawProxyError } from './proxy-errors.js';
import { classifyUpstreamError, type UpstreamFailure } from './upstream-error.js';

/** Options of {@link forwardUpgrade}. */
export interface ForwardUpgradeOptions {
  /** Upstream origin, e.g. `http://10.0.0.5:5007`. */
  target: URL | string;
  /** Request target sent upstream instead of `req.url` (e.g. an absolute-form target rewritten to origin form). */
  path?: string;
  /** Complete request headers for the upstream, including `connection: upgrade` and `upgrade` (see
   * forwardRequestHeaders with `upgrade: true`). */
  headers: OutgoingHttpHeaders;
  /** Idle limit of the tunnel; default 610 s. */
  idleTimeoutMs?: number;
  /** Called when the upstream cannot be reached; it must answer `socket` (see writeRawProxyError). Default: raw 502 JSON. */
  onError?: (err: unknown, failure: UpstreamFailure) => void;
}

function serializeHead(req: IncomingMessage, headers: OutgoingHttpHeaders, path: string | undefined): string {
  let head = `${req.method ?? 'GET'} ${path ?? req.url ?? '/'} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      const text = String(v);
      // Values come from Node's parser or from us; refuse anything that could split the head anyway.
      if (/[\r\n]/.test(text) || /[\r\n:]/.test(name)) continue;
      head += `${name}: ${text}\r\n`;
    }
  }
  return head + '\r\n';
}

/**
 * Tunnel an upgrade request (from the HTTP server's `upgrade` event) to `opts.target`. `head` is the first
 * chunk of the upgraded stream that Node already read; it is sent on after the request head.
 */
export function forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, opts: ForwardUpgradeOptions): void {
  const target = typeof opts.target === 'string' ? new URL(opts.target) : opts.target;
  const idleMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const upstream = connect({ host: target.hostname.replace(/^\[|\]$/g, ''), port: Number(target.port || 80), noDelay: true });
  let connected = false;

  const destroyBoth = (): void => {
    upstream.destroy();
    socket.destroy();
  };
  socket.on('error', destroyBoth);
  socket.on('close', () => upstream.destroy());
  upstream.setTimeout(idleMs, destroyBoth);

  upstream.on('error', (err) => {
    if (connected) {
      destroyBoth();
      return;
    }
    const failure = classifyUpstreamError(err);
    if (opts.onError) opts.onError(err, failure);
    else writeRawProxyError(socket, 502, proxyErrorBody(502, 'The upstream is unreachable'));
  });
  upstream.on('close', () => {
    if (connected) socket.destroy();
  });

  upstream.once('connect', () => {
    connected = true;
    upstream.write(serializeHead(req, opts.headers, opts.path));
    if (head.length > 0) upstream.write(head);
    upstream.pipe(socket);
    socket.pipe(upstream);
  });
}
