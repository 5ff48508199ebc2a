// The HAProxy configuration the edge renders for its traffic port (docs/decisions.md, "The traffic port served
// by HAProxy"). HAProxy forwards by itself only what it can route exactly like resolveSandboxRoute does, for a
// public running sandbox in the route maps; every other request goes unchanged to the edge's loopback Node
// listener (the fallback), which applies all the traffic rules as before. Anything malformed or ambiguous
// (two Host or E2b-Sandbox-* fields, leading zeros, IPv6 hosts, absolute-form targets, OPTIONS) is "not
// routable here": the fallback gives the exact JSON error.

import { ENVD_PORT } from '@cove/contracts/sandbox';
import { NODE_TOKEN_HEADER, portClosedBody, proxyErrorBody } from '@cove/traffic-proxy';
import { CORS_EXPOSED_HEADERS } from '../cors.js';

/** Idle limit of a stream (E2B's client proxy; the Node path's DEFAULT_IDLE_TIMEOUT_MS). */
const IDLE_S = 610;

/** Headers HAProxy adds toward the fallback; a client-sent copy is always removed first. */
export const FALLBACK_SECRET_HEADER = 'cove-edge-forwarder';
export const FALLBACK_CLIENT_ADDRESS_HEADER = 'cove-client-address';
export const FALLBACK_CLIENT_PROTO_HEADER = 'cove-client-proto';
/** Marks HAProxy's own answer for a sandbox it could not connect to (one hop), so it leaves as the node proxy's 502. */
const DIRECT_ERROR_HEADER = 'cove-direct-error';
/**
 * envd's public routes (its Connect services, /files, /health), the only ones on envd's port that take the one-hop
 * route: the node proxy refuses envd's internal routes (/init, …) in any spelling, so any other path goes there.
 */
const ENVD_PUBLIC_PATH = '^/((process\\.Process|filesystem\\.Filesystem)/[A-Za-z]{1,64}|files|health)$';
/** Larger heads go to the fallback: near Node's 16 KiB limit only it knows the exact answer (431 JSON). */
const FAST_PATH_MAX_HEAD_BYTES = 15 * 1024;

/** What the rendered configuration needs. */
export interface HaproxyConfigInput {
  /** Address the public traffic port(s) bind. */
  host: string;
  port: number;
  /** The TLS traffic port and its PEM (certificate chain + key), when configured. */
  tls?: { port: number; pemPath: string };
  sandboxDomain: string;
  /** The loopback Node listener every request HAProxy does not route goes to. */
  fallbackPort: number;
  /** Per-start secret HAProxy adds toward the fallback so it may trust the client address it is given. */
  fallbackSecret: string;
  /** Runtime API socket (0600). */
  socketPath: string;
  /** sandbox id → node id. */
  sandboxMapPath: string;
  /** node id → `<ipv4>/<port>/<node token>`. */
  nodeMapPath: string;
  /** sandbox id → `<ipv4>` of a sandbox HAProxy connects to itself (route-maps.ts, the one-hop route). */
  directMapPath: string;
  /** Drop root after binding (set when the edge runs as root and the `haproxy` user exists). */
  user?: string;
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Single-quoted HAProxy word: no escapes inside, so the text must not hold a quote. */
function quote(text: string): string {
  if (text.includes("'")) throw new Error(`cannot quote ${text}`);
  return `'${text}'`;
}

function bindAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The JSON error HAProxy itself answers with, in the proxy contract's shape (proxy-errors.ts). */
function errorRule(status: number, message: string, withSandbox: boolean): string {
  const body = JSON.stringify(proxyErrorBody(status, message, withSandbox ? { sandboxId: '@SID@' } : {}));
  const fmt = body.replace('"@SID@"', '"%[var(txn.sid)]"');
  return `  http-error status ${status} content-type application/json hdr cache-control no-store lf-string ${quote(fmt)}`;
}

/** HAProxy's 503 for a sandbox it could not connect to, in the node proxy's port-closed shape (made 502 after). */
function directErrorRule(): string {
  const body = JSON.stringify(portClosedBody('@SID@', 65536)).replace('"@SID@"', '"%[var(txn.sid)]"').replace('65536', '%[var(txn.port)]');
  return `  http-error status 503 content-type application/json hdr cache-control no-store hdr ${DIRECT_ERROR_HEADER} 1 lf-string ${quote(body)}`;
}

/** Render haproxy.cfg. */
export function renderHaproxyConfig(c: HaproxyConfigInput): string {
  const domain = escapeRegex(c.sandboxDomain.toLowerCase());
  const octet = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
  const listenPort = '(:[0-9]{1,5})?';
  // `<port>-<id>.<domain>`: the only Host form routed here (the legacy `-<clientId>` form goes to the fallback).
  const hostRoute = `^[1-9][0-9]{0,4}-[a-z0-9]{1,128}\\.${domain}${listenPort}$`;
  // Hosts whose requests route by the E2b-Sandbox-* headers (isHeaderRoutedHost), IPv6 literals left out.
  const headerHost = `^(localhost|sandbox\\.${domain}|${octet}\\.${octet}\\.${octet}\\.${octet})${listenPort}$`;
  const lines = [
    '# Rendered by the Cove edge at every start; edits are overwritten.',
    'global',
    `  stats socket ${c.socketPath} mode 600 level admin`,
    // Heads up to ~30 KiB get through to the fallback, which answers those past Node's 16 KiB with its 431 JSON.
    '  tune.bufsize 32768',
    // One traffic port, one owner: a second HAProxy (another edge) must fail to bind, not share it.
    '  noreuseport',
    // WebSockets stay on HTTP/1.1 (RFC 8441 is not offered over HTTP/2, and refused below when tried anyway):
    // HAProxy 2.6 keeps an h2 WebSocket tunnel's node connection open after the client resets the stream.
    '  h2-workaround-bogus-websocket-clients',
    ...(c.user ? [`  user ${c.user}`, `  group ${c.user}`] : []),
    '',
    'defaults',
    '  mode http',
    '  option http-keep-alive',
    // A client that leaves takes its request with it (the Node path: nothing forwarded after a resume wait).
    '  option abortonclose',
    '  timeout connect 5s',
    `  timeout client ${IDLE_S}s`,
    `  timeout server ${IDLE_S}s`,
    `  timeout tunnel ${IDLE_S}s`,
    '  timeout http-request 60s',
    '  timeout http-keep-alive 65s',
    errorRule(400, 'Malformed HTTP request', false),
    errorRule(408, 'Request timed out', false),
    errorRule(500, 'Internal proxy error', false),
    errorRule(502, 'The sandbox node is unreachable', true),
    errorRule(503, 'The sandbox node is unreachable', true),
    errorRule(504, 'The sandbox node did not answer in time', true),
    '',
    'frontend traffic',
    `  bind ${bindAddress(c.host, c.port)}`,
    // HTTP/2 lets a client's sequential calls share one connection (the SDK's envd client asks for it).
    ...(c.tls ? [`  bind ${bindAddress(c.host, c.tls.port)} ssl crt ${c.tls.pemPath} alpn h2,http/1.1`] : []),
    // Nothing a client sends may pose as HAProxy toward the fallback or as the edge toward a node.
    `  http-request del-header ${FALLBACK_SECRET_HEADER}`,
    `  http-request del-header ${FALLBACK_CLIENT_ADDRESS_HEADER}`,
    `  http-request del-header ${FALLBACK_CLIENT_PROTO_HEADER}`,
    // An HTTP/2 request can only carry Upgrade as an RFC 8441 extended CONNECT (HAProxy rewrites it to one).
    '  http-request deny deny_status 400 if { fc_http_major 2 } { req.fhdr_cnt(upgrade) gt 0 }',
    '  acl one_host req.fhdr_cnt(host) eq 1',
    // HTTP/2 requests carry their target as :authority and :path, which HAProxy shows as an absolute URL; its h2
    // mux has already refused a :path that is not one. A CONNECT is never routed here (no tunnel to a node).
    '  acl origin_form url_beg /',
    '  acl origin_form fc_http_major 2',
    '  acl unrouted_method method OPTIONS CONNECT',
    `  acl small_head req.hdrs,length lt ${FAST_PATH_MAX_HEAD_BYTES}`,
    `  acl host_route req.fhdr(host),lower -m reg ${quote(hostRoute)}`,
    `  acl header_host req.fhdr(host),lower -m reg ${quote(headerHost)}`,
    '  acl one_id req.fhdr_cnt(e2b-sandbox-id) eq 1',
    '  acl one_port req.fhdr_cnt(e2b-sandbox-port) eq 1',
    `  acl id_ok req.fhdr(e2b-sandbox-id) -m reg ${quote('^[a-z0-9]{1,128}$')}`,
    `  acl port_ok req.fhdr(e2b-sandbox-port) -m reg ${quote('^[1-9][0-9]{0,4}$')}`,
    // The route comes from one parse (Host or headers, never both: the two Host forms exclude each other): what is
    // looked up is what is sent. The form is judged once (an ACL is evaluated again in every rule naming it), the
    // costly whole-head length last.
    '  http-request set-var(txn.form) str(host) if one_host host_route origin_form !unrouted_method small_head',
    '  http-request set-var(txn.form) str(hdr) if one_host header_host one_id one_port id_ok port_ok origin_form !unrouted_method small_head',
    '  http-request set-var(txn.sid) req.fhdr(host),lower,field(1,.),field(2,-) if { var(txn.form) -m str host }',
    '  http-request set-var(txn.port) req.fhdr(host),field(1,-) if { var(txn.form) -m str host }',
    '  http-request set-var(txn.sid) req.fhdr(e2b-sandbox-id) if { var(txn.form) -m str hdr }',
    '  http-request set-var(txn.port) req.fhdr(e2b-sandbox-port) if { var(txn.form) -m str hdr }',
    '  http-request unset-var(txn.sid) if { var(txn.port) -m int gt 65535 }',
    `  http-request set-var(txn.nid) var(txn.sid),map(${c.sandboxMapPath}) if { var(txn.sid) -m found }`,
    `  http-request set-var(txn.node) var(txn.nid),map(${c.nodeMapPath}) if { var(txn.nid) -m found }`,
    // CORS on answers to cross-origin requests (cors.ts addCorsHeaders), HAProxy's own errors included.
    '  http-request set-var(txn.origin) req.fhdr(origin) if { req.fhdr_cnt(origin) eq 1 }',
    '  http-after-response set-var(txn.cors) str(1) if { var(txn.origin) -m found } !{ res.hdr(access-control-allow-origin) -m found }',
    '  http-after-response set-header access-control-allow-origin %[var(txn.origin)] if { var(txn.cors) -m found }',
    `  http-after-response set-header access-control-expose-headers ${quote(CORS_EXPOSED_HEADERS)} if { var(txn.cors) -m found }`,
    "  http-after-response set-header vary '%[res.fhdr(vary)], Origin' if { var(txn.cors) -m found } { res.fhdr(vary) -m found }",
    '  http-after-response set-header vary Origin if { var(txn.cors) -m found } !{ res.fhdr(vary) -m found }',
    // The one-hop route (route-maps.ts): only beside a node route, and on envd's port only for its public routes.
    `  http-request set-var(txn.daddr) var(txn.sid),map(${c.directMapPath}) if { var(txn.node) -m found }`,
    `  acl envd_port var(txn.port) -m str ${ENVD_PORT}`,
    `  acl envd_public_path path -m reg ${quote(ENVD_PUBLIC_PATH)}`,
    '  use_backend direct if { var(txn.daddr) -m found } !envd_port',
    '  use_backend direct if { var(txn.daddr) -m found } envd_port envd_public_path',
    // A sandbox that could not be reached in one hop answers as the node proxy does (502, port not open).
    `  http-after-response set-status 502 reason 'Bad Gateway' if { res.hdr(${DIRECT_ERROR_HEADER}) -m found }`,
    `  http-after-response del-header ${DIRECT_ERROR_HEADER}`,
    '  use_backend nodes if { var(txn.node) -m found }',
    '  default_backend fallback',
    '',
    'backend nodes',
    '  http-reuse always',
    '  option forwardfor',
    '  http-request set-header x-forwarded-proto https if { ssl_fc } !{ req.hdr(x-forwarded-proto) -m found }',
    '  http-request set-header x-forwarded-proto http if !{ ssl_fc } !{ req.hdr(x-forwarded-proto) -m found }',
    '  http-request set-header x-forwarded-host %[req.fhdr(host)] if !{ req.hdr(x-forwarded-host) -m found }',
    `  http-request set-header ${NODE_TOKEN_HEADER} %[var(txn.node),field(3,/)]`,
    '  http-request set-header e2b-sandbox-id %[var(txn.sid)]',
    '  http-request set-header e2b-sandbox-port %[var(txn.port)]',
    '  http-request set-dst var(txn.node),field(1,/)',
    '  http-request set-dst-port var(txn.node),field(2,/)',
    '  server node 0.0.0.0:0',
    '',
    'backend direct',
    '  http-reuse always',
    // A refused connection is a closed port: answer at once, as the node proxy does, instead of retrying.
    '  retries 0',
    '  option forwardfor',
    '  http-request set-header x-forwarded-proto https if { ssl_fc } !{ req.hdr(x-forwarded-proto) -m found }',
    '  http-request set-header x-forwarded-proto http if !{ ssl_fc } !{ req.hdr(x-forwarded-proto) -m found }',
    '  http-request set-header x-forwarded-host %[req.fhdr(host)] if !{ req.hdr(x-forwarded-host) -m found }',
    // What the node proxy would strip; the node token is never sent to a sandbox, the client's copy neither.
    `  http-request del-header ${NODE_TOKEN_HEADER}`,
    '  http-request del-header proxy-authorization',
    '  http-request set-header e2b-sandbox-id %[var(txn.sid)]',
    '  http-request set-header e2b-sandbox-port %[var(txn.port)]',
    '  http-request set-dst var(txn.daddr)',
    '  http-request set-dst-port var(txn.port)',
    // The sandbox may not pose as HAProxy's own error.
    `  http-response del-header ${DIRECT_ERROR_HEADER}`,
    directErrorRule(),
    '  server sandbox 0.0.0.0:0',
    '',
    'backend fallback',
    '  http-reuse always',
    `  http-request set-header ${FALLBACK_SECRET_HEADER} ${c.fallbackSecret}`,
    `  http-request set-header ${FALLBACK_CLIENT_ADDRESS_HEADER} %[src]`,
    `  http-request set-header ${FALLBACK_CLIENT_PROTO_HEADER} https if { ssl_fc }`,
    `  http-request set-header ${FALLBACK_CLIENT_PROTO_HEADER} http if !{ ssl_fc }`,
    `  server edge 127.0.0.1:${c.fallbackPort}`,
    '',
  ];
  return lines.join('\n');
}
