// The root pino logger. Secrets are redacted by path wherever they appear in bound objects.

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
  'headers["cove-node-token"]',
  'headers["x-access-token"]',
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
