// The edge's configuration: one zod schema over the environment, parsed once in main.ts and frozen.
// Defaults fit the single-host `cove up` (docs/decisions.md, "Secrets and ports").

import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';

/** Domains the unchanged SDK treats specially (reference e2b-sdk.md §1.3): a self-hosted cluster must not use them. */
const E2B_DOMAINS = ['e2b.app', 'e2b.dev', 'e2b.pro', 'e2b-staging.dev'];

const port = z.coerce.number().int().min(0).max(65535);
const secret = z.string().min(16, 'must be at least 16 characters');

const EnvSchema = z.object({
  COVE_EDGE_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,128}$/)
    .optional(),
  COVE_EDGE_API_PORT: port.default(3001),
  COVE_EDGE_TRAFFIC_PORT: port.default(3002),
  COVE_EDGE_HOST: z.string().min(1).default('127.0.0.1'),
  COVE_CLUSTER_TOKEN: secret,
  COVE_NODE_TOKEN: secret,
  COVE_SANDBOX_DOMAIN: z
    .string()
    .toLowerCase()
    .regex(/^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, 'must be a DNS name')
    .refine((d) => !E2B_DOMAINS.some((e) => d === e || d.endsWith(`.${e}`)), 'must not be an E2B domain'),
  // redis://, rediss:// or the absolute path of a unix socket (ioredis accepts both).
  COVE_EDGE_REDIS_URL: z
    .string()
    .refine((v) => /^rediss?:\/\/./.test(v) || v.startsWith('/'), 'must be a redis:// or rediss:// URL or a unix socket path')
    .optional(),
  COVE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** The parsed, frozen edge configuration. */
export interface EdgeConfig {
  readonly edgeId: string;
  readonly apiPort: number;
  readonly trafficPort: number;
  readonly host: string;
  readonly clusterToken: string;
  readonly nodeToken: string;
  readonly sandboxDomain: string;
  readonly redisUrl: string | undefined;
  readonly logLevel: string;
}

/** Raised when the environment does not describe a valid edge; lists every bad field at once. */
export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`invalid edge configuration:\n  ${issues.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** Parse the environment (`process.env` in main.ts, a literal object in tests). */
export function loadConfig(env: Record<string, string | undefined>): EdgeConfig {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  return Object.freeze({
    edgeId: e.COVE_EDGE_ID ?? `edge-${hostname().replace(/[^A-Za-z0-9._-]/g, '-')}-${randomBytes(3).toString('hex')}`,
    apiPort: e.COVE_EDGE_API_PORT,
    trafficPort: e.COVE_EDGE_TRAFFIC_PORT,
    host: e.COVE_EDGE_HOST,
    clusterToken: e.COVE_CLUSTER_TOKEN,
    nodeToken: e.COVE_NODE_TOKEN,
    sandboxDomain: e.COVE_SANDBOX_DOMAIN,
    redisUrl: e.COVE_EDGE_REDIS_URL,
    logLevel: e.COVE_LOG_LEVEL,
  });
}
