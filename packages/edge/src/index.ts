// Public surface of @cove/edge: build an edge in-process (CLI, integration tests) from a parsed config.

export { buildEdge } from './app.js';
export type { Edge, EdgeAddresses, EdgeDeps } from './app.js';
export { ConfigError, loadConfig } from './config.js';
export type { EdgeConfig, EdgeTlsConfig } from './config.js';
export { createLogger } from './logger.js';
export type { EdgeStatus } from './api/rest-api.js';
// An operator's (and the end-to-end tests') view of the traffic port's HAProxy: its run dir's files and runtime API.
export { runFiles as haproxyRunFiles } from './traffic/haproxy/haproxy-supervisor.js';
export { runtimeCommand as haproxyRuntimeCommand } from './traffic/haproxy/runtime-socket.js';
