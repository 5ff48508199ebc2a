import { pino } from 'pino';
import { buildEnvd } from './app.js';
import { parseConfig } from './config.js';
import { codeCacheState } from './code-cache.js';
import { ENVD_ACCESS_TOKEN_HEADER, ENVD_INIT_TOKEN_HEADER, ENVD_WRITE_CODE_CACHE_ENV } from '@cove/contracts/sandbox';
import { ENVD_VERSION } from './version.js';
import { installHeaders } from './web-headers.js';

// The only module that touches process.*: config in, signals, exit codes.
installHeaders();
const config = parseConfig(process.env);
// Children get an environment built from scratch, but drop the secret from ours as well.
delete process.env.COVE_ENVD_INIT_TOKEN;

const logger = pino({
  level: config.logLevel,
  base: { component: 'envd' },
  redact: { paths: [`req.headers["${ENVD_ACCESS_TOKEN_HEADER}"]`, `req.headers["${ENVD_INIT_TOKEN_HEADER}"]`, 'accessToken'], censor: '[redacted]' },
});

const envd = buildEnvd(config, { logger });
if (process.env[ENVD_WRITE_CODE_CACHE_ENV] === '1') {
  // The node host's one run that makes the code cache (start.ts): everything a start compiles, no port, no signals.
  envd.shutdown();
} else {
  // No top-level await: the bundle is CommonJS (docs/decisions.md, envd as CommonJS). A port it cannot take ends
  // the process, as the awaited listen did.
  const failListen = (err: Error): void => {
    logger.fatal({ err }, 'envd could not listen');
    process.exit(1);
  };
  envd.server.once('error', failListen);
  envd.server.once('listening', () => {
    envd.server.off('error', failListen);
    const address = envd.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    logger.info({ port, version: ENVD_VERSION, initEnabled: config.initToken !== undefined, codeCache: codeCacheState() }, 'envd listening');
  });
  envd.server.listen(config.port, config.host);

  process.on('uncaughtException', (err) => logger.error({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));

  const stop = (signal: string): void => {
    logger.info({ signal }, 'envd stopping');
    envd.server.close();
    envd.server.closeAllConnections();
    envd.shutdown();
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
