// Control-plane configuration: one zod schema over the environment, parsed once in main.ts and frozen.
// Defaults fit a single-host `cove up`; nothing below main.ts reads process.env.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { tokenHash } from '@cove/auth-tokens';
import { isAcceptableIssuerUrl, type ClientCredentialsOptions } from '@cove/auth-tokens/oidc';
import { z } from 'zod';
import type { TeamQuotas } from './store/team-store.js';

const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);

const EnvSchema = z.object({
  COVE_CP_PORT: int(3000).pipe(z.number().max(65535)),
  COVE_CP_HOST: z.string().min(1).default('127.0.0.1'),
  COVE_DATA_DIR: z.string().min(1).default('.cove/control-plane'),
  /** `postgres://…` for PostgreSQL, `sqlite:<path>` or a bare path for SQLite; default `<data dir>/control-plane.db`. */
  COVE_DB_URL: z.string().min(1).optional(),
  COVE_ADMIN_TOKEN: z.string().min(16, 'COVE_ADMIN_TOKEN must be at least 16 characters').optional(),
  /** sha256 hex of the admin token, instead of COVE_ADMIN_TOKEN: the control plane then never holds the token. */
  COVE_ADMIN_TOKEN_SHA256: z.string().regex(/^[0-9a-f]{64}$/i, 'COVE_ADMIN_TOKEN_SHA256 must be 64 hex digits (sha256)').transform((h) => h.toLowerCase()).optional(),
  COVE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** JSON-lines file receiving one line per request (method, url, status, duration); unset = stdout log only. */
  COVE_CP_REQUEST_LOG: z.string().min(1).optional(),
  COVE_CP_BODY_LIMIT: int(1024 * 1024, 1024),
  COVE_DEFAULT_MAX_SANDBOXES: int(20, 1),
  COVE_DEFAULT_MAX_TIMEOUT_HOURS: int(1, 1),
  /** Per-team quotas unless the admin API sets a team's own: template builds at once (each is a sandbox's worth of
   *  CPU and memory on a node), templates, and persistent snapshots (each a full copy in cluster storage). */
  COVE_DEFAULT_MAX_CONCURRENT_BUILDS: int(3, 0),
  COVE_DEFAULT_MAX_TEMPLATES: int(100, 0),
  COVE_DEFAULT_MAX_SNAPSHOTS: int(100, 0),
  /** How often the evictor looks for sandboxes past their end time. */
  COVE_EVICT_INTERVAL_MS: int(1000, 10),
  /** How often running sandboxes are checked against their nodes' lists. */
  COVE_RECONCILE_INTERVAL_MS: int(15_000, 100),
  /** A sandbox younger than this is not checked against its node's list (it may not be listed yet). */
  COVE_RECONCILE_GRACE_MS: int(30_000, 0),
  /** vCPUs placement may hand out per physical CPU of a node (sandboxes rarely use all they are given). */
  COVE_CPU_OVERCOMMIT: z.coerce.number().min(1).default(32),
  /** Memory placement may hand out per byte of a node's memory (1 = no overcommit). */
  COVE_MEMORY_OVERCOMMIT: z.coerce.number().min(1).default(1),
  /** Disk placement may hand out per byte of a node's disk (1 = none); the node's actually free space is a floor either way. */
  COVE_DISK_OVERCOMMIT: z.coerce.number().min(1).default(1),
  /** How often running template builds are asked for their state (so builds nobody polls still finish). */
  COVE_BUILD_WATCH_INTERVAL_MS: int(2000, 50),
  /** A build no node of its cluster knows for this long (its node left or restarted) ends as an error. */
  COVE_BUILD_LOST_AFTER_MS: int(60_000, 0),
  /** Deadline for one control-link call (Create waits for the sandbox to boot). */
  COVE_CONTROL_LINK_TIMEOUT_MS: int(60_000, 100),
  // How often an outbound-only link is pinged; an edge cuts a link silent for COVE_CONTROL_LINK_IDLE_MS (3 × this by default).
  COVE_CONTROL_LINK_PING_MS: int(15_000, 100),
  /** How long one node list from the edge serves placements (a burst asks once); 0 = once per placement. */
  COVE_NODE_LIST_CACHE_MS: int(300).pipe(z.number().max(2_000)),
  /** How long a call waits for another operation's pause/resume of the same sandbox; default 2 × link deadline + 10 s. */
  COVE_TRANSITION_WAIT_MS: z.coerce.number().int().min(0).optional(),
  /** PEM file of extra CA certificates trusted for `https://` cluster endpoints (on top of the system roots). */
  COVE_CONTROL_LINK_CA: z.string().min(1).optional(),
  /** PEM files of the control plane's client certificate and key, for edges requiring mutual TLS. */
  COVE_CONTROL_LINK_CLIENT_CERT: z.string().min(1).optional(),
  COVE_CONTROL_LINK_CLIENT_KEY: z.string().min(1).optional(),
  /** `iss` of the grants the control plane signs for the clusters' public ports (edges expect the same value). */
  COVE_GRANT_ISSUER: z.string().min(1).max(256).default('cove-control-plane'),
  /** How long a grant lives (at most 60 s: it only has to survive one redirect). */
  COVE_GRANT_TTL_S: int(60, 5).pipe(z.number().max(60)),
  /** How long a dashboard session lives from sign-in (docs/dashboard.md); at most 7 days. */
  COVE_DASHBOARD_SESSION_TTL_S: int(12 * 3600, 1).pipe(z.number().max(7 * 24 * 3600)),
  /** Cluster health alerts: a node's CPU, memory or disk use above this percentage; no report for this long. */
  COVE_ALERT_CAPACITY_PCT: z.coerce.number().min(1).max(100).default(85),
  COVE_ALERT_REPORT_STALE_S: int(120, 1),
  /** Anonymized cluster metrics kept per cluster: by age and by count (a report every 30 s: 20160 = 7 days). */
  COVE_CLUSTER_METRICS_RETENTION_HOURS: int(168, 1),
  COVE_CLUSTER_METRICS_MAX_REPORTS: int(20_160, 10),
  /** JSON file: per cluster name, the control plane's client at the cluster's own identity provider (docs/operating.md). */
  COVE_CLUSTER_OIDC_CLIENTS: z.string().min(1).optional(),
}).refine((e) => (e.COVE_ADMIN_TOKEN === undefined) !== (e.COVE_ADMIN_TOKEN_SHA256 === undefined), {
  message: 'set exactly one of COVE_ADMIN_TOKEN and COVE_ADMIN_TOKEN_SHA256',
  path: ['COVE_ADMIN_TOKEN'],
}).refine((e) => (e.COVE_CONTROL_LINK_CLIENT_CERT === undefined) === (e.COVE_CONTROL_LINK_CLIENT_KEY === undefined), {
  message: 'COVE_CONTROL_LINK_CLIENT_CERT and COVE_CONTROL_LINK_CLIENT_KEY must be set together (or neither)',
  path: ['COVE_CONTROL_LINK_CLIENT_CERT'],
});

/** TLS material for `https://` cluster endpoints; certificate verification is always on. */
export interface ControlLinkTls {
  /** Extra trusted CAs (added to Node's root certificates). */
  ca: Buffer | undefined;
  /** Client certificate and key for mutual TLS. */
  cert: Buffer | undefined;
  key: Buffer | undefined;
}

/** One gated cluster's client: `issuer` (https, or http on loopback), the client's id and secret, what to ask for. */
const OidcClient = z
  .object({
    issuer: z.string().max(2048).refine(isAcceptableIssuerUrl, 'must be an https:// URL (http:// only on loopback) without query or fragment'),
    clientId: z.string().min(1).max(256),
    clientSecret: z.string().min(1).max(1024),
    scope: z.string().max(1024).optional(),
    /** Extra token-request parameters: `resource` (RFC 8707) or a provider's `audience`. */
    params: z.record(z.string().max(1024)).optional(),
    timeoutMs: z.number().int().min(100).max(60_000).optional(),
  })
  .strict();
const OidcClients = z.record(z.string().min(1).max(128), OidcClient);
export type OidcClients = Readonly<Record<string, ClientCredentialsOptions>>;

export type DbConfig = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string };

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  db: DbConfig;
  /** sha256 hex of the admin token: only the hash is kept, and requests are compared against it in constant time. */
  adminTokenHash: string;
  logLevel: string;
  requestLogPath: string | undefined;
  bodyLimit: number;
  defaultLimits: { maxConcurrentSandboxes: number; maxTimeoutHours: number } & TeamQuotas;
  evictIntervalMs: number;
  reconcileIntervalMs: number;
  reconcileGraceMs: number;
  cpuOvercommit: number;
  memoryOvercommit: number;
  diskOvercommit: number;
  controlLinkTimeoutMs: number;
  controlLinkPingMs: number;
  nodeListCacheMs: number;
  transitionWaitMs: number;
  controlLinkTls: Readonly<ControlLinkTls>;
  buildWatchIntervalMs: number;
  buildLostAfterMs: number;
  grantIssuer: string;
  grantTtlS: number;
  dashboardSessionTtlS: number;
  alerts: { capacityPct: number; reportStaleMs: number };
  clusterMetricsRetention: { maxAgeMs: number; maxReports: number };
  /** Clusters gated by their customer's identity provider: the control plane's client there, by cluster name. */
  clusterOidcClients: OidcClients;
}

export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`invalid configuration:\n  ${issues.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

export function parseDbUrl(url: string | undefined, dataDir: string): DbConfig {
  if (!url) return { kind: 'sqlite', path: join(dataDir, 'control-plane.db') };
  if (/^postgres(ql)?:\/\//.test(url)) return { kind: 'postgres', url };
  return { kind: 'sqlite', path: url.replace(/^sqlite:(\/\/)?/, '') };
}

/** Parses the environment, listing every bad field at once. */
export function loadConfig(env: Record<string, string | undefined>): Readonly<Config> {
  const r = EnvSchema.safeParse(env);
  if (!r.success) throw new ConfigError(r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  const e = r.data;
  return Object.freeze({
    port: e.COVE_CP_PORT,
    host: e.COVE_CP_HOST,
    dataDir: e.COVE_DATA_DIR,
    db: Object.freeze(parseDbUrl(e.COVE_DB_URL, e.COVE_DATA_DIR)),
    adminTokenHash: e.COVE_ADMIN_TOKEN_SHA256 ?? tokenHash(e.COVE_ADMIN_TOKEN!),
    logLevel: e.COVE_LOG_LEVEL,
    requestLogPath: e.COVE_CP_REQUEST_LOG,
    bodyLimit: e.COVE_CP_BODY_LIMIT,
    defaultLimits: Object.freeze({
      maxConcurrentSandboxes: e.COVE_DEFAULT_MAX_SANDBOXES,
      maxTimeoutHours: e.COVE_DEFAULT_MAX_TIMEOUT_HOURS,
      maxConcurrentBuilds: e.COVE_DEFAULT_MAX_CONCURRENT_BUILDS,
      maxTemplates: e.COVE_DEFAULT_MAX_TEMPLATES,
      maxSnapshots: e.COVE_DEFAULT_MAX_SNAPSHOTS,
    }),
    evictIntervalMs: e.COVE_EVICT_INTERVAL_MS,
    reconcileIntervalMs: e.COVE_RECONCILE_INTERVAL_MS,
    reconcileGraceMs: e.COVE_RECONCILE_GRACE_MS,
    cpuOvercommit: e.COVE_CPU_OVERCOMMIT,
    memoryOvercommit: e.COVE_MEMORY_OVERCOMMIT,
    diskOvercommit: e.COVE_DISK_OVERCOMMIT,
    controlLinkTimeoutMs: e.COVE_CONTROL_LINK_TIMEOUT_MS,
    controlLinkPingMs: e.COVE_CONTROL_LINK_PING_MS,
    nodeListCacheMs: e.COVE_NODE_LIST_CACHE_MS,
    transitionWaitMs: e.COVE_TRANSITION_WAIT_MS ?? 2 * e.COVE_CONTROL_LINK_TIMEOUT_MS + 10_000,
    buildWatchIntervalMs: e.COVE_BUILD_WATCH_INTERVAL_MS,
    buildLostAfterMs: e.COVE_BUILD_LOST_AFTER_MS,
    grantIssuer: e.COVE_GRANT_ISSUER,
    grantTtlS: e.COVE_GRANT_TTL_S,
    dashboardSessionTtlS: e.COVE_DASHBOARD_SESSION_TTL_S,
    alerts: Object.freeze({ capacityPct: e.COVE_ALERT_CAPACITY_PCT, reportStaleMs: e.COVE_ALERT_REPORT_STALE_S * 1000 }),
    clusterMetricsRetention: Object.freeze({ maxAgeMs: e.COVE_CLUSTER_METRICS_RETENTION_HOURS * 3_600_000, maxReports: e.COVE_CLUSTER_METRICS_MAX_REPORTS }),
    controlLinkTls: loadControlLinkTls(e.COVE_CONTROL_LINK_CA, e.COVE_CONTROL_LINK_CLIENT_CERT, e.COVE_CONTROL_LINK_CLIENT_KEY),
    clusterOidcClients: loadOidcClients(e.COVE_CLUSTER_OIDC_CLIENTS),
  });
}

/** Read the gated clusters' client file (a file, so the secrets stay out of the environment and process lists). */
function loadOidcClients(path: string | undefined): OidcClients {
  if (path === undefined) return Object.freeze({});
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError([`COVE_CLUSTER_OIDC_CLIENTS: cannot read ${path} as JSON: ${(err as Error).message}`]);
  }
  const parsed = OidcClients.safeParse(raw);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => `COVE_CLUSTER_OIDC_CLIENTS: ${i.path.join('.')}: ${i.message}`));
  return Object.freeze(Object.fromEntries(Object.entries(parsed.data).map(([name, c]) => [name, Object.freeze({ ...c })])));
}

/** Read the control link's PEM files; a missing or malformed file fails start-up with the setting's name. */
function loadControlLinkTls(caPath: string | undefined, certPath: string | undefined, keyPath: string | undefined): Readonly<ControlLinkTls> {
  const issues: string[] = [];
  const read = (name: string, path: string | undefined): Buffer | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      issues.push(`${name}: cannot read ${path}: ${(err as Error).message}`);
      return undefined;
    }
  };
  const tls = { ca: read('COVE_CONTROL_LINK_CA', caPath), cert: read('COVE_CONTROL_LINK_CLIENT_CERT', certPath), key: read('COVE_CONTROL_LINK_CLIENT_KEY', keyPath) };
  if (issues.length === 0) {
    try {
      createSecureContext(tls);
    } catch (err) {
      issues.push(`COVE_CONTROL_LINK_CA/COVE_CONTROL_LINK_CLIENT_CERT/COVE_CONTROL_LINK_CLIENT_KEY: unusable PEM: ${(err as Error).message}`);
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return Object.freeze(tls);
}
