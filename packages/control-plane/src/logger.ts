// The root pino logger. Secrets are redacted by path wherever they appear in bound objects; request logs carry
// the URL only (never headers or bodies), so API keys and tokens never reach a log line.

import { pino, multistream, destination as pinoDestination, type Logger, type DestinationStream } from 'pino';

/** Shared log field names, so every component's logs join up. */
export const LogFields = {
  sandboxId: 'sandboxId',
  teamId: 'teamId',
  nodeId: 'nodeId',
  clusterId: 'clusterId',
  templateId: 'templateId',
  reqId: 'reqId',
} as const;

const REDACT = [
  'apiKey',
  'key',
  'token',
  'clusterToken',
  'adminToken',
  'envdAccessToken',
  'trafficAccessToken',
  '*.apiKey',
  '*.key',
  '*.token',
  '*.clusterToken',
  '*.envdAccessToken',
  '*.trafficAccessToken',
  'req.headers["x-api-key"]',
  'req.headers.authorization',
  'req.headers["x-admin-token"]',
];

/** Every line names its deployable (`component`, as the metrics' label does); a part of it binds `module`. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { component: 'control-plane' }, redact: { paths: REDACT, censor: '[redacted]' } }, destination);
}

/** A logger writing JSON lines to a file (the request log the integration suite greps). */
export function createFileLogger(path: string): { logger: Logger; flush: () => void } {
  const dest = pinoDestination({ dest: path, sync: true, mkdir: true });
  return { logger: pino({ level: 'info', base: undefined }, multistream([{ stream: dest }])), flush: () => dest.flushSync() };
}

export type { Logger };
