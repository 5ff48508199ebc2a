#!/usr/bin/env node
// Process entry of the collector: configuration from the environment, build, listen; SIGTERM/SIGINT close the
// server and the store (WAL checkpointed by SQLite on close). The only file touching process.*.

import { buildCollector } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './logger.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      createLogger('error').fatal({ issues: err.issues }, err.message);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  const collector = buildCollector(config, { log });
  const url = await collector.listen();
  log.info({ url, report: config.report !== undefined }, 'collector listening');
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'collector stopping');
    collector.close().then(
      () => {
        log.info('collector stopped');
        process.exitCode = 0;
      },
      (err: unknown) => {
        log.error({ err }, 'collector shutdown failed');
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  createLogger('error').fatal({ err }, 'collector failed to start');
  process.exitCode = 1;
});
