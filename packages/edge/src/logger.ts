// The root pino logger and the shared log field names. Secrets are redacted by path wherever they appear.

import { LINK_TRAFFIC_TOKEN_HEADER } from '@cove/contracts/link';
import { ENVD_ACCESS_TOKEN_HEADER } from '@cove/contracts/sandbox';
import { NODE_TOKEN_HEADER, TRAFFIC_TOKEN_HEADER } from '@cove/traffic-proxy';
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
  `req.headers["${NODE_TOKEN_HEADER}"]`,
  `req.headers["${ENVD_ACCESS_TOKEN_HEADER}"]`,
  `req.headers["${TRAFFIC_TOKEN_HEADER}"]`,
  `req.headers["${LINK_TRAFFIC_TOKEN_HEADER}"]`,
  'headers.authorization',
];

/** Make the root logger; main.ts calls this once, tests pass `level: 'silent'`. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { component: 'edge' }, redact: { paths: REDACT, censor: '[redacted]' } }, destination);
}
