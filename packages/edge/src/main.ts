// Process entry of the edge: configuration from the environment, build, listen, and on SIGTERM/SIGINT
// report `draining`, stop accepting and close after a grace period. The only file touching process.*.

import { buildEdge } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { multistream, type Level } from 'pino';
import { createLogger } from './logger.js';
import { EdgeTelemetry } from './telemetry/edge-telemetry.js';

/** Time in-flight requests get to finish after SIGTERM before connections are cut. */
const SHUTDOWN_GRACE_MS = 15_000;

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
  // Telemetry first: the logger tees its lines to the collector (when COVE_COLLECTOR_URL is set).
  const telemetry = new EdgeTelemetry(config);
  const otlp = telemetry.logStream();
  const log = createLogger(config.logLevel, otlp ? multistream([{ level: config.logLevel as Level, stream: process.stdout }, { level: 'info', stream: otlp }]) : undefined);
  const edge = buildEdge(config, { log, telemetry });
  const listening = edge.listen();

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'edge draining');
    edge.drain();
    // A signal during start-up waits for it to end: HAProxy may already run, and close() is what stops it (the
    // default action would leave it and its run dir behind).
    listening
      .then(() => edge.close(SHUTDOWN_GRACE_MS))
      .then(() => {
        log.info('edge stopped');
        // Everything of ours is closed; what a library still has scheduled (an OTLP exporter retrying a collector
        // that is gone) must not hold the exit for seconds more.
        process.exit(0);
      })
      .catch((err: unknown) => {
        log.error({ err }, 'edge shutdown failed');
        process.exit(1);
      });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await listening;
}

main().catch((err: unknown) => {
  createLogger('error').fatal({ err }, 'edge failed to start');
  process.exitCode = 1;
});
