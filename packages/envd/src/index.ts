/** @cove/envd public surface: build the daemon, parse its config, and its protocol version. */
export { buildEnvd, type Envd, type EnvdDeps } from './app.js';
export { parseConfig, type EnvdConfig } from './config.js';
export { ENVD_VERSION } from './version.js';
export { fileSignature } from './auth/file-signature.js';
