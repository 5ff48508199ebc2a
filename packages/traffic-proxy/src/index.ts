// Public surface of @cove/traffic-proxy: reverse-proxy primitives shared by the edge and the orchestrator's
// node proxy, so both route and fail the same way E2B's proxies do (reference e2b-infra.md §5.5).

export {
  NODE_TOKEN_HEADER,
  SANDBOX_ID_HEADER,
  SANDBOX_PORT_HEADER,
  TRAFFIC_TOKEN_HEADER,
  hostname,
  isHeaderRoutedHost,
  isSandboxId,
  parsePort,
  parseSandboxHeaders,
  parseSandboxHost,
  resolveSandboxRoute,
} from './sandbox-route.js';
export type { RouteFailure, RouteResult, RoutingHeaders, SandboxRoute } from './sandbox-route.js';
export {
  portClosedBody,
  proxyErrorBody,
  sandboxNotFoundBody,
  sendProxyError,
  writeRawProxyError,
} from './proxy-errors.js';
export type { ProxyErrorBody } from './proxy-errors.js';
export { forwardRequestHeaders, forwardResponseHeaders } from './forward-headers.js';
export type { ForwardHeaderOptions } from './forward-headers.js';
export {
  BUFFERED_BODY_TIMEOUT_MS,
  ClientBodyTimeout,
  DEFAULT_IDLE_TIMEOUT_MS,
  MAX_BUFFERED_BODY_BYTES,
  createUpstreamAgent,
  createUpstreamDispatcher,
  forwardHttp,
} from './forward-http.js';
export type { ForwardHttpOptions, ForwardResult } from './forward-http.js';
export { forwardUpgrade } from './forward-upgrade.js';
export type { ForwardUpgradeOptions } from './forward-upgrade.js';
export { UpstreamIdleTimeout, classifyUpstreamError } from './upstream-error.js';
export type { UpstreamFailure } from './upstream-error.js';
export { networkNamespaceId } from './network-namespace.js';
