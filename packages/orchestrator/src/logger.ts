// The root pino logger. Secrets are redacted by path wherever they appear in bound objects.

import { ENVD_ACCESS_TOKEN_HEADER } from '@cove/contracts/sandbox';
import { NODE_TOKEN_HEADER } from '@cove/traffic-proxy';
import { pino, type Logger, type DestinationStream } from 'pino';

/** Shared log field names, so every component's logs join up. */
export const LogFields = {
  sandboxId: 'sandboxId',
  nodeId: 'nodeId',
  templateId: 'templateId',
  slotId: 'slotId',
} as const;

const REDACT = [
  'nodeToken',
  'accessToken',
  'initToken',
  'envdAccessToken',
  'headers.authorization',
  `headers["${NODE_TOKEN_HEADER}"]`,
  `headers["${ENVD_ACCESS_TOKEN_HEADER}"]`,
  '*.nodeToken',
  '*.accessToken',
  '*.initToken',
  '*.envdAccessToken',
  '*.envVars',
];

/** Every line names its deployable (`component`, as the metrics' label does); a part of it binds `module`. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { component: 'orchestrator' }, redact: { paths: REDACT, censor: '[redacted]' } }, destination);
}

export type { Logger };
