// The root pino logger. Tokens are redacted by path wherever they appear; the collector never logs a record's
// content (it is tenant data), only counts.

import { pino, type DestinationStream, type Logger } from 'pino';

const REDACT = ['token', 'clusterToken', 'config.token', 'config.report.clusterToken', 'req.headers.authorization', 'headers.authorization'];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { component: 'collector' }, redact: { paths: REDACT, censor: '[redacted]' } }, destination);
}
