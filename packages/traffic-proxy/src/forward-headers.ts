// Which request/response headers cross a proxy hop. RFC 9110 §7.6.1: hop-by-hop fields (and any field
// named in Connection) describe one connection and must not be forwarded. `expect` is dropped too: Node's
// server already answered `100 Continue` to the client, a second interim response from upstream would only
// confuse the client side of this hop.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'http2-settings',
]);

function connectionTokens(headers: IncomingHttpHeaders): Set<string> {
  const raw = headers.connection;
  const out = new Set<string>();
  for (const v of Array.isArray(raw) ? raw : raw ? [raw] : []) {
    for (const t of v.split(',')) {
      const name = t.trim().toLowerCase();
      if (name) out.add(name);
    }
  }
  return out;
}

/** Options of {@link forwardRequestHeaders}. */
export interface ForwardHeaderOptions {
  /** Headers to set (replacing the client's), lower-case names. */
  set?: Record<string, string>;
  /** Client headers to drop besides hop-by-hop ones, lower-case names (e.g. a spoofed internal token). */
  remove?: readonly string[];
  /** Keep `connection: upgrade` + `upgrade` (WebSocket handshakes). */
  upgrade?: boolean;
  /** Add X-Forwarded-For/-Proto/-Host for the client at `remoteAddress`. */
  forwarded?: { remoteAddress: string | undefined; proto: 'http' | 'https' };
}

/** Request headers for the upstream hop: client headers minus hop-by-hop and `remove`, plus `set`. */
export function forwardRequestHeaders(headers: IncomingHttpHeaders, opts: ForwardHeaderOptions = {}): OutgoingHttpHeaders {
  const drop = connectionTokens(headers);
  const remove = new Set(opts.remove ?? []);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || drop.has(name) || remove.has(name)) continue;
    out[name] = value;
  }
  if (opts.forwarded) {
    const prior = headers['x-forwarded-for'];
    const client = opts.forwarded.remoteAddress ?? '';
    const chain = [Array.isArray(prior) ? prior.join(', ') : prior, client].filter((v) => v).join(', ');
    if (chain) out['x-forwarded-for'] = chain;
    out['x-forwarded-proto'] = typeof headers['x-forwarded-proto'] === 'string' ? headers['x-forwarded-proto'] : opts.forwarded.proto;
    if (typeof headers.host === 'string' && headers['x-forwarded-host'] === undefined) out['x-forwarded-host'] = headers.host;
  }
  if (opts.upgrade) {
    out.connection = 'upgrade';
    if (headers.upgrade !== undefined) out.upgrade = headers.upgrade;
  }
  for (const [name, value] of Object.entries(opts.set ?? {})) out[name] = value;
  return out;
}

/** Response headers for the client hop: upstream headers minus hop-by-hop ones. */
export function forwardResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const drop = connectionTokens(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || drop.has(name)) continue;
    out[name] = value;
  }
  return out;
}
