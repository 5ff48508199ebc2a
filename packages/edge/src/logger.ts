// The root pino logger and the shared log field names. Secrets are redacted by path wherever they appear.

import { pino, type DestinationStream, type Logger } from 'pino';

/** Log field names shared across Cove components, so logs join up. */
export const LogFields = {
  sandboxId: 'sandboxId',
  nodeId: 'nodeId',
  edgeId: 'edgeId',
  reqId: 'reqId',
} as const;

const REDACT = [
  'clusterToken',
  'nodeToken',
  'config.clusterToken',
  'config.nodeToken',
  'nodeCredentialKey',
  'config.nodeCredentialKey',
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers["cove-node-token"]',
  'req.headers["x-access-token"]',
  'req.headers["e2b-traffic-access-token"]',
  'headers.authorization',
];

/** Make the root logger; main.ts calls this once, tests pass `level: 'silent'`. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { component: 'edge' }, redact: { paths: REDACT, censor: '[redacted]' } }, destination);
}
