// The collector's configuration: one zod schema over the environment, parsed once in main.ts and frozen.

import { httpBaseUrl } from '@cove/contracts/config';
import { z } from 'zod';

const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().min(1);
const secret = z.string().min(16, 'must be at least 16 characters');

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

const EnvSchema = z
  .object({
    COVE_COLLECTOR_HOST: z.string().min(1).default('127.0.0.1'),
    // OTLP/HTTP's registered port: senders' defaults point here.
    COVE_COLLECTOR_PORT: port.default(4318),
    COVE_COLLECTOR_TOKEN: secret,
    COVE_DATA_DIR: z.string().min(1),
    COVE_LOG_RETENTION_BYTES: positiveInt.default(GiB),
    COVE_METRIC_RETENTION_BYTES: positiveInt.default(256 * MiB),
    COVE_RETENTION_HOURS: z.coerce.number().positive().max(24 * 366).default(168),
    // The anonymized report: both or neither (a collector without a control plane just keeps data).
    COVE_CONTROL_PLANE_URL: httpBaseUrl.optional(),
    COVE_CLUSTER_TOKEN: secret.optional(),
    COVE_REPORT_INTERVAL_MS: z.coerce.number().int().min(1000).max(3_600_000).default(30_000),
    COVE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .refine((e) => (e.COVE_CONTROL_PLANE_URL === undefined) === (e.COVE_CLUSTER_TOKEN === undefined), {
    message: 'COVE_CONTROL_PLANE_URL and COVE_CLUSTER_TOKEN go together (both for the metrics report, or neither)',
    path: ['COVE_CONTROL_PLANE_URL'],
  });

export interface CollectorConfig {
  host: string;
  port: number;
  token: string;
  dataDir: string;
  logRetentionBytes: number;
  metricRetentionBytes: number;
  retentionMs: number;
  report?: { controlPlaneUrl: string; clusterToken: string; intervalMs: number };
  logLevel: string;
}

export class ConfigError extends Error {
  constructor(readonly issues: Array<{ path: string; message: string }>) {
    super(`invalid collector configuration: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(env: NodeJS.ProcessEnv): CollectorConfig {
  const r = EnvSchema.safeParse(env);
  if (!r.success) throw new ConfigError(r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })));
  const e = r.data;
  return Object.freeze({
    host: e.COVE_COLLECTOR_HOST,
    port: e.COVE_COLLECTOR_PORT,
    token: e.COVE_COLLECTOR_TOKEN,
    dataDir: e.COVE_DATA_DIR,
    logRetentionBytes: e.COVE_LOG_RETENTION_BYTES,
    metricRetentionBytes: e.COVE_METRIC_RETENTION_BYTES,
    retentionMs: Math.round(e.COVE_RETENTION_HOURS * 3_600_000),
    report:
      e.COVE_CONTROL_PLANE_URL && e.COVE_CLUSTER_TOKEN
        ? { controlPlaneUrl: e.COVE_CONTROL_PLANE_URL.replace(/\/+$/, ''), clusterToken: e.COVE_CLUSTER_TOKEN, intervalMs: e.COVE_REPORT_INTERVAL_MS }
        : undefined,
    logLevel: e.COVE_LOG_LEVEL,
  });
}
