#!/usr/bin/env node
// Process entry: the only file that touches process.*. Loads config, builds the control plane, listens, starts
// the evictor, and shuts down cleanly on SIGTERM/SIGINT.

import { buildControlPlane } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { createFileLogger, createLogger } from './logger.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const requestLog = config.requestLogPath ? createFileLogger(config.requestLogPath) : undefined;
  const cp = await buildControlPlane(config, { logger, requestLog: requestLog?.logger });
  const address = await cp.app.listen({ port: config.port, host: config.host });
  cp.startBackground();
  logger.info({ address, db: config.db.kind }, 'control plane listening');

  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    logger.info({ signal }, 'shutting down');
    cp.close()
      .then(() => {
        requestLog?.flush();
        process.exit(0);
      })
      .catch((err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`control plane failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
