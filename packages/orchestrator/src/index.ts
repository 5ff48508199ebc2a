// Public surface of @cove/orchestrator, for programs that embed a node (the CLI's `cove up` may run it
// in-process). Most callers start it as a process instead: `node packages/orchestrator/dist/src/main.js`.

/** Build an orchestrator (RPC server, node proxy, warm pools, expiry, recovery) without listening. */
export { buildOrchestrator } from './app.js';
export type { Orchestrator, OrchestratorDeps } from './app.js';
/** Parse the COVE_* environment into a frozen configuration; throws ConfigError listing every bad field. */
export { ConfigError, loadConfig } from './config.js';
export type { OrchestratorConfig } from './config.js';
/** Header the node proxy requires (the node token), set by edges. */
export { NODE_TOKEN_HEADER } from '@cove/traffic-proxy';
