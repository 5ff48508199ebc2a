import { z } from 'zod';
import { ENVD_PORT } from '@cove/contracts/sandbox';

const schema = z.object({
  ENVD_PORT: z.coerce.number().int().min(0).max(65535).default(ENVD_PORT),
  ENVD_HOST: z.string().min(1).default('0.0.0.0'),
  // Empty counts as unset: /init is then refused.
  COVE_ENVD_INIT_TOKEN: z.preprocess((v) => (v === '' ? undefined : v), z.string().min(16).optional()),
  ENVD_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  // 0 disables the limit. Default 10 GiB: large enough for datasets, small enough to stop a runaway stream.
  ENVD_MAX_UPLOAD_BYTES: z.coerce.number().int().min(0).default(10 * 1024 * 1024 * 1024),
});

/** Parsed, frozen envd configuration. */
export interface EnvdConfig {
  readonly port: number;
  readonly host: string;
  /** Secret the orchestrator must present in `X-Cove-Init-Token`; undefined disables `/init`. */
  readonly initToken: string | undefined;
  readonly logLevel: string;
  /** Upload limit in bytes for `POST /files` (after gzip decoding); 0 = unlimited. */
  readonly maxUploadBytes: number;
  readonly passwdPath: string;
  readonly groupPath: string;
}

/** Parses envd's environment; throws one error listing every bad field. */
export function parseConfig(env: Record<string, string | undefined>): EnvdConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid envd configuration: ${fields}`);
  }
  const c = parsed.data;
  return Object.freeze({
    port: c.ENVD_PORT,
    host: c.ENVD_HOST,
    initToken: c.COVE_ENVD_INIT_TOKEN,
    logLevel: c.ENVD_LOG_LEVEL,
    maxUploadBytes: c.ENVD_MAX_UPLOAD_BYTES,
    passwdPath: '/etc/passwd',
    groupPath: '/etc/group',
  });
}
