// Public surface of @cove/control-plane: build it in-process (tests, the CLI) and its configuration.

export { buildControlPlane, type ControlPlane, type ControlPlaneDeps } from './app.js';
export { loadConfig, type Config } from './config.js';
export { createLogger } from './logger.js';
export { rankNodes, type NodeView } from './cluster/placement.js';
