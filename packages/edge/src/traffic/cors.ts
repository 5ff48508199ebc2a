// CORS for browser clients of sandboxes (reference e2b-sdk.md §1.6): the edge answers preflights itself —
// a node or a sandbox server may not — and adds the allow/expose headers to proxied responses that lack
// them. Access-Control-Allow-Headers cannot hold a wildcard that covers `authorization` or `x-metadata-*`,
// so the requested headers are checked against the list and echoed.

import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { cors as connectCors } from '@connectrpc/connect';
import { ENVD_ACCESS_TOKEN_HEADER, ENVD_KEEPALIVE_HEADER } from '@cove/contracts/sandbox';
import { SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER, TRAFFIC_TOKEN_HEADER } from '@cove/traffic-proxy';

const ALLOWED = new Set(
  [
    SANDBOX_ID_HEADER,
    SANDBOX_PORT_HEADER,
    TRAFFIC_TOKEN_HEADER,
    ENVD_ACCESS_TOKEN_HEADER,
    'authorization',
    'connect-protocol-version',
    'connect-timeout-ms',
    ENVD_KEEPALIVE_HEADER,
    'content-type',
    'content-encoding',
    'accept-encoding',
    'user-agent',
    'x-user-agent',
    'grpc-timeout',
    'x-grpc-web',
    ...connectCors.allowedHeaders,
  ].map((h) => h.toLowerCase()),
);
const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';
export const CORS_EXPOSED_HEADERS = [...new Set([...connectCors.exposedHeaders, 'Connect-Protocol-Version', 'Content-Encoding', 'Content-Length', 'Content-Type'])].join(', ');
/** Browsers cap this at 2 h (Chromium) anyway. */
const MAX_AGE = '7200';

/** True for a CORS preflight: OPTIONS with Origin and Access-Control-Request-Method. */
export function isPreflight(method: string | undefined, headers: IncomingHttpHeaders): boolean {
  return method === 'OPTIONS' && typeof headers.origin === 'string' && headers['access-control-request-method'] !== undefined;
}

/** Answer a preflight with 204. */
export function answerPreflight(headers: IncomingHttpHeaders, res: ServerResponse): void {
  const requested = String(headers['access-control-request-headers'] ?? '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter((h) => h !== '');
  const allowed = requested.filter((h) => ALLOWED.has(h) || h.startsWith('x-metadata-'));
  res.writeHead(204, {
    'access-control-allow-origin': String(headers.origin),
    'access-control-allow-methods': ALLOWED_METHODS,
    'access-control-allow-headers': [...new Set([...ALLOWED, ...allowed])].join(', '),
    'access-control-expose-headers': CORS_EXPOSED_HEADERS,
    'access-control-max-age': MAX_AGE,
    vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
    'content-length': '0',
  });
  res.end();
}

/** Add CORS response headers for a cross-origin request unless the upstream already set its own. */
export function addCorsHeaders(origin: string | undefined, headers: OutgoingHttpHeaders): void {
  if (!origin || headers['access-control-allow-origin'] !== undefined) return;
  headers['access-control-allow-origin'] = origin;
  headers['access-control-expose-headers'] = CORS_EXPOSED_HEADERS;
  const vary = headers.vary;
  headers.vary = vary ? `${String(vary)}, Origin` : 'Origin';
}
