// The edge's configuration: one zod schema over the environment, parsed once in main.ts and frozen.
// Defaults fit the single-host `cove up` (docs/decisions.md, "Secrets and ports").

import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { InvalidStorageConfig, parseStorageUrl, type StorageConfig } from '@cove/storage';
import { httpBaseUrl } from '@cove/contracts/config';
import { isAcceptableIssuerUrl } from '@cove/auth-tokens/oidc';
import { z } from 'zod';

/** Domains the unchanged SDK treats specially (reference e2b-sdk.md §1.3): a self-hosted cluster must not use them. */
const E2B_DOMAINS = ['e2b.app', 'e2b.dev', 'e2b.pro', 'e2b-staging.dev'];

const port = z.coerce.number().int().min(0).max(65535);
/** The upload endpoint's default bound: S3's own limit for one PUT. */
const DEFAULT_UPLOAD_MAX_BYTES = 5 * 1024 ** 3;
const optionalText = z.string().min(1).optional();
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
  // Derives each node's own token (nodes/node-credentials.ts); nodes hold only theirs, as COVE_NODE_TOKEN.
  COVE_NODE_CREDENTIAL_KEY: z.string().min(32, 'must be at least 32 characters'),
  // The one shared token of older releases: refused, so an upgrade cannot keep it by mistake.
  COVE_NODE_TOKEN: z.undefined({ invalid_type_error: 'no longer used by the edge: set COVE_NODE_CREDENTIAL_KEY (each node gets its own derived token)' }),
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
  // A customer's own OTLP/HTTP receiver for the edge's own logs instead of the collector (COVE_COLLECTOR_URL).
  COVE_OTLP_ENDPOINT: z.string().url().optional(),
  // TLS on the API port: PEM files; cert and key together or neither. A client CA makes it mutual TLS.
  COVE_EDGE_TLS_CERT: z.string().min(1).optional(),
  COVE_EDGE_TLS_KEY: z.string().min(1).optional(),
  COVE_EDGE_TLS_CLIENT_CA: z.string().min(1).optional(),
  // The sandbox traffic port over TLS (what `https://<port>-<id>.<domain>` reaches): a port and the PEM files of a
  // certificate for `*.<domain>`; all three or none. The cleartext traffic port stays (header routing, LBs that
  // end TLS themselves).
  COVE_EDGE_TRAFFIC_TLS_PORT: port.optional(),
  COVE_EDGE_TRAFFIC_TLS_CERT: z.string().min(1).optional(),
  COVE_EDGE_TRAFFIC_TLS_KEY: z.string().min(1).optional(),
  // Who serves the traffic port(s): `haproxy` = an HAProxy the edge supervises routes public running sandboxes itself
  // and hands everything else to the Node server on loopback; used when HAProxy is installed and the catalog is
  // in-process (not with COVE_EDGE_REDIS_URL); the default. `node` = the Node server alone.
  COVE_TRAFFIC_PROXY: z.enum(['haproxy', 'node']).default('haproxy'),
  // With HAProxy: a public sandbox on a node in this edge's network namespace is served in one hop (HAProxy straight
  // to the sandbox's address) instead of two (through the node proxy). `0` = always through the node proxy.
  COVE_TRAFFIC_DIRECT: z.enum(['0', '1']).default('1'),
  // Where the edge keeps HAProxy's rendered files (0700; config, route maps, TLS PEM, runtime socket). Unset = a
  // fresh directory under the system's temporary directory.
  COVE_EDGE_RUN_DIR: z.string().min(1).optional(),
  // Cluster storage (template-build COPY uploads): a @cove/storage URL, file:// or s3://.
  COVE_STORAGE_URL: z
    .string()
    .min(1)
    .default('file:///var/lib/cove/storage')
    .superRefine((v, ctx) => {
      try {
        parseStorageUrl(v);
      } catch (err) {
        const issues = err instanceof InvalidStorageConfig ? err.issues : [(err as Error).message];
        for (const message of issues) ctx.addIssue({ code: z.ZodIssueCode.custom, message });
      }
    }),
  COVE_STORAGE_ACCESS_KEY_ID: optionalText,
  COVE_STORAGE_SECRET_ACCESS_KEY: optionalText,
  // HMAC key of the upload tokens; only edges mint and check them (every edge of a cluster shares it).
  COVE_UPLOAD_SECRET: z.string({ required_error: 'required (it signs the upload URLs the edge serves)' }).min(32, 'must be at least 32 characters'),
  // Base URL clients reach the API port at (upload URLs point here).
  COVE_EDGE_PUBLIC_URL: httpBaseUrl.optional(),
  COVE_UPLOAD_MAX_BYTES: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER).default(DEFAULT_UPLOAD_MAX_BYTES),
  // The control plane's base URL: set = requests for sandboxes the catalog does not know ask it to resume them.
  COVE_CONTROL_PLANE_URL: httpBaseUrl.optional(),
  // The public port (docs/observability.md): sandbox logs and metrics, build logs and status for SDK clients the
  // control plane redirected here with a grant. Unset = not served (`cove up` sets 3003 + its port offset).
  COVE_EDGE_PUBLIC_PORT: port.optional(),
  // `iss` the control plane's grants carry (its COVE_GRANT_ISSUER).
  COVE_GRANT_ISSUER: z.string().min(1).max(256).default('cove-control-plane'),
  // The cluster's collector (its OTLP intake for the edge's own logs, its query API for the public port) and its
  // token; unset = no telemetry is sent and log and metric routes answer 503.
  COVE_COLLECTOR_URL: httpBaseUrl.optional(),
  COVE_COLLECTOR_TOKEN: secret.optional(),
  // Deadline of one collector query (headers and body).
  COVE_COLLECTOR_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(5_000),
  // The customer's OpenID Connect provider (docs/operating.md). Set = the cluster API and the control link accept
  // only its access tokens (the cluster token no longer opens them), and people or a dashboard may read the public
  // routes with its tokens. Issuer: https (http only on loopback), exactly the `iss` of its tokens.
  COVE_OIDC_ISSUER: z.string().max(2048).refine(isAcceptableIssuerUrl, 'must be an https:// URL (http:// only on loopback) without query or fragment').optional(),
  // Accepted `aud` values, comma-separated (one must be in the token).
  COVE_OIDC_AUDIENCE: z.string().max(4096).transform(list).pipe(z.array(z.string().min(1).max(512)).min(1, 'must name at least one audience')).optional(),
  // Scopes a token needs for the cluster API and the control link, and for the public routes (space or comma separated).
  COVE_OIDC_CLUSTER_SCOPES: z.string().max(1024).default('cove:cluster').transform(list),
  COVE_OIDC_READ_SCOPES: z.string().max(1024).default('cove:read').transform(list),
  // Claims every token must carry, as a JSON object of claim → string, number or boolean (an array claim must contain it).
  COVE_OIDC_REQUIRED_CLAIMS: z
    .string()
    .max(8192)
    .transform((v, ctx) => {
      try {
        return JSON.parse(v) as unknown;
      } catch {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be a JSON object' });
        return z.NEVER;
      }
    })
    .pipe(z.record(z.union([z.string(), z.number(), z.boolean()])))
    .default('{}'),
  // Set = a token reads the public routes only for the teams this claim names (a string or an array); unset = every team.
  COVE_OIDC_TEAM_CLAIM: z.string().regex(/^[A-Za-z0-9_.:/-]{1,128}$/).optional(),
  // Tokens living longer than this are refused, so disabling a client cuts it off within this long at most.
  COVE_OIDC_MAX_TOKEN_LIFETIME_S: z.coerce.number().int().min(30).max(86_400).default(3600),
  COVE_OIDC_CLOCK_TOLERANCE_S: z.coerce.number().int().min(0).max(300).default(30),
  // After a JWKS fetch, a token with an unknown key id fetches it again only after this long.
  COVE_OIDC_JWKS_COOLDOWN_MS: z.coerce.number().int().min(0).max(600_000).default(30_000),
  // Grants the control plane signs for SDK callers of the public routes: `off` = only OIDC tokens read them.
  COVE_PUBLIC_GRANTS: z.enum(['on', 'off']).default('on'),
  // Outbound-only control link (docs/operating.md): `on` = this edge dials COVE_CONTROL_PLANE_URL and the control
  // plane's calls come back over that connection, so the customer's network opens no port to the vendor.
  COVE_CONTROL_LINK_OUTBOUND: z.enum(['on', 'off']).default('off'),
  // An outbound control link with no traffic this long is dead and re-dialled; the control plane pings every
  // COVE_CONTROL_LINK_PING_MS (15 s by default), so keep this a few pings long.
  COVE_CONTROL_LINK_IDLE_MS: z.coerce.number().int().min(300).max(600_000).default(45_000),
  // Browser origins (a dashboard) allowed to call the public routes, comma-separated exact origins; unset = none.
  COVE_PUBLIC_CORS_ORIGINS: z
    .string()
    .max(4096)
    .default('')
    .transform(list)
    .pipe(z.array(z.string().regex(/^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$/, 'each must be an origin: scheme://host[:port], no path'))),
})
  .refine((e) => (e.COVE_EDGE_TLS_CERT === undefined) === (e.COVE_EDGE_TLS_KEY === undefined), {
    message: 'COVE_EDGE_TLS_CERT and COVE_EDGE_TLS_KEY must be set together (or neither, for cleartext)',
    path: ['COVE_EDGE_TLS_CERT'],
  })
  .refine((e) => e.COVE_EDGE_TLS_CLIENT_CA === undefined || e.COVE_EDGE_TLS_CERT !== undefined, {
    message: 'COVE_EDGE_TLS_CLIENT_CA needs COVE_EDGE_TLS_CERT and COVE_EDGE_TLS_KEY (mutual TLS is TLS first)',
    path: ['COVE_EDGE_TLS_CLIENT_CA'],
  })
  .refine(
    (e) => new Set([e.COVE_EDGE_TRAFFIC_TLS_PORT, e.COVE_EDGE_TRAFFIC_TLS_CERT, e.COVE_EDGE_TRAFFIC_TLS_KEY].map((v) => v === undefined)).size === 1,
    { message: 'COVE_EDGE_TRAFFIC_TLS_PORT, COVE_EDGE_TRAFFIC_TLS_CERT and COVE_EDGE_TRAFFIC_TLS_KEY must be set together (or none)', path: ['COVE_EDGE_TRAFFIC_TLS_PORT'] },
  )
  .refine((e) => (e.COVE_COLLECTOR_URL === undefined) === (e.COVE_COLLECTOR_TOKEN === undefined), {
    message: 'COVE_COLLECTOR_URL and COVE_COLLECTOR_TOKEN must be set together (or neither)',
    path: ['COVE_COLLECTOR_URL'],
  })
  .refine((e) => (e.COVE_OIDC_ISSUER === undefined) === (e.COVE_OIDC_AUDIENCE === undefined), {
    message: 'COVE_OIDC_ISSUER and COVE_OIDC_AUDIENCE must be set together (or neither)',
    path: ['COVE_OIDC_ISSUER'],
  })
  .refine((e) => e.COVE_PUBLIC_GRANTS === 'on' || e.COVE_OIDC_ISSUER !== undefined, {
    message: 'with grants off only OIDC tokens read the public routes: set COVE_OIDC_ISSUER',
    path: ['COVE_PUBLIC_GRANTS'],
  })
  .refine((e) => e.COVE_CONTROL_LINK_OUTBOUND === 'off' || (e.COVE_CONTROL_PLANE_URL !== undefined && isAcceptableIssuerUrl(e.COVE_CONTROL_PLANE_URL)), {
    // The link carries the cluster token and every control call: only over TLS, but to a control plane on this machine.
    message: 'the outbound control link dials COVE_CONTROL_PLANE_URL: set it to an https:// URL (http:// only on loopback)',
    path: ['COVE_CONTROL_LINK_OUTBOUND'],
  })
  .refine((e) => e.COVE_EDGE_PUBLIC_PORT === undefined || e.COVE_CONTROL_PLANE_URL !== undefined, {
    message: 'the public port verifies grants against the control plane: set COVE_CONTROL_PLANE_URL too',
    path: ['COVE_EDGE_PUBLIC_PORT'],
  })
  .refine((e) => (e.COVE_STORAGE_ACCESS_KEY_ID === undefined) === (e.COVE_STORAGE_SECRET_ACCESS_KEY === undefined), {
    message: 'COVE_STORAGE_ACCESS_KEY_ID and COVE_STORAGE_SECRET_ACCESS_KEY must be set together (or neither, for the default AWS chain)',
    path: ['COVE_STORAGE_ACCESS_KEY_ID'],
  })
  .refine((e) => !isLocal(e.COVE_STORAGE_URL) || e.COVE_STORAGE_ACCESS_KEY_ID === undefined, {
    message: 'only meaningful with an s3:// COVE_STORAGE_URL',
    path: ['COVE_STORAGE_ACCESS_KEY_ID'],
  });

/** `a b,c` → ['a', 'b', 'c']. */
function list(v: string): string[] {
  return v.split(/[\s,]+/).filter(Boolean);
}

function isLocal(storageUrl: string): boolean {
  return storageUrl.startsWith('file:');
}

/** TLS material of the API port, read from the configured PEM files at start-up. */
export interface EdgeTlsConfig {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Set = mutual TLS: a client certificate signed by one of these CAs is required. */
  readonly clientCa: Buffer | undefined;
}

/** Cluster storage as the edge uses it: presence checks and upload URLs for template-build COPY files. */
export interface EdgeStorageConfig {
  readonly storage: StorageConfig;
  /** HMAC key of upload tokens (any driver: the edge relays uploads into S3 too, see TemplateFiles). */
  readonly uploadSecret: string;
  /** Base URL of the API port as clients see it; undefined = derived from host, port and TLS at listen. */
  readonly publicUrl: string | undefined;
  /** Largest COPY tarball the upload endpoint accepts, whatever the driver. */
  readonly uploadMaxBytes: number;
}

/** The parsed, frozen edge configuration. */
export interface EdgeConfig {
  readonly edgeId: string;
  readonly apiPort: number;
  readonly trafficPort: number;
  readonly host: string;
  readonly clusterToken: string;
  /** Key node tokens are derived from; never sent anywhere. */
  readonly nodeCredentialKey: string;
  readonly sandboxDomain: string;
  readonly redisUrl: string | undefined;
  readonly logLevel: string;
  /** Undefined = cleartext API port (h2c and HTTP/1.1 sniffed on one port). */
  readonly tls: EdgeTlsConfig | undefined;
  /** The TLS traffic port; undefined = not served. The PEM paths are kept: the edge reloads them when they change. */
  readonly trafficTls: { readonly port: number; readonly certPath: string; readonly keyPath: string; readonly cert: Buffer; readonly key: Buffer } | undefined;
  readonly storage: EdgeStorageConfig;
  /** Who serves the traffic port(s) (app.ts decides whether HAProxy can: installed, in-process catalog). */
  readonly trafficProxy: 'haproxy' | 'node';
  /** HAProxy may send a public sandbox's requests straight to its address when the node shares the edge's namespace. */
  readonly directRoutes: boolean;
  /** HAProxy's files; undefined = a fresh temporary directory. */
  readonly runDir: string | undefined;
  /** Base URL of the control plane (no trailing slash); undefined = auto-resume on traffic is off. */
  readonly controlPlaneUrl: string | undefined;
  /** The public port (logs, metrics, build status behind grants); undefined = not served. */
  readonly publicPort: number | undefined;
  readonly grantIssuer: string;
  /** The collector query API; undefined = log and metric routes answer 503. */
  readonly collector: { readonly url: string; readonly token: string; readonly timeoutMs: number } | undefined;
  /** The customer's identity provider; undefined = the cluster token opens the cluster API and control link. */
  readonly oidc: EdgeOidcConfig | undefined;
  /** Whether the public routes accept the control plane's grants. */
  readonly publicGrants: boolean;
  /** The edge dials the control plane (controlPlaneUrl) for the control link instead of being dialled. */
  readonly controlLinkOutbound: boolean;
  readonly controlLinkIdleMs: number;
  /** Browser origins allowed to call the public routes (CORS). */
  readonly publicCorsOrigins: readonly string[];
  /** OTLP/HTTP receiver of the edge's own logs; undefined = off. */
  readonly telemetry: { readonly url: string; readonly token: string | undefined } | undefined;
}

export interface EdgeOidcConfig {
  readonly issuer: string;
  readonly audience: readonly string[];
  readonly clusterScopes: readonly string[];
  readonly readScopes: readonly string[];
  readonly requiredClaims: Readonly<Record<string, string | number | boolean>>;
  readonly teamClaim: string | undefined;
  readonly maxLifetimeS: number;
  readonly clockToleranceS: number;
  readonly jwksCooldownMs: number;
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
  const storage = loadStorage(e);
  const tls = loadTls(e.COVE_EDGE_TLS_CERT, e.COVE_EDGE_TLS_KEY, e.COVE_EDGE_TLS_CLIENT_CA);
  const trafficTls = loadTrafficTls(e.COVE_EDGE_TRAFFIC_TLS_PORT, e.COVE_EDGE_TRAFFIC_TLS_CERT, e.COVE_EDGE_TRAFFIC_TLS_KEY);
  return Object.freeze({
    edgeId: e.COVE_EDGE_ID ?? `edge-${hostname().replace(/[^A-Za-z0-9._-]/g, '-')}-${randomBytes(3).toString('hex')}`,
    apiPort: e.COVE_EDGE_API_PORT,
    trafficPort: e.COVE_EDGE_TRAFFIC_PORT,
    host: e.COVE_EDGE_HOST,
    clusterToken: e.COVE_CLUSTER_TOKEN,
    nodeCredentialKey: e.COVE_NODE_CREDENTIAL_KEY,
    sandboxDomain: e.COVE_SANDBOX_DOMAIN,
    redisUrl: e.COVE_EDGE_REDIS_URL,
    logLevel: e.COVE_LOG_LEVEL,
    tls,
    trafficTls,
    storage,
    trafficProxy: e.COVE_TRAFFIC_PROXY,
    directRoutes: e.COVE_TRAFFIC_DIRECT === '1',
    runDir: e.COVE_EDGE_RUN_DIR,
    controlPlaneUrl: e.COVE_CONTROL_PLANE_URL?.replace(/\/+$/, ''),
    publicPort: e.COVE_EDGE_PUBLIC_PORT,
    grantIssuer: e.COVE_GRANT_ISSUER,
    collector:
      e.COVE_COLLECTOR_URL !== undefined && e.COVE_COLLECTOR_TOKEN !== undefined
        ? Object.freeze({ url: e.COVE_COLLECTOR_URL.replace(/\/+$/, ''), token: e.COVE_COLLECTOR_TOKEN, timeoutMs: e.COVE_COLLECTOR_TIMEOUT_MS })
        : undefined,
    telemetry: otlpTarget(e.COVE_OTLP_ENDPOINT ?? e.COVE_COLLECTOR_URL, e.COVE_COLLECTOR_TOKEN),
    oidc:
      e.COVE_OIDC_ISSUER !== undefined && e.COVE_OIDC_AUDIENCE !== undefined
        ? Object.freeze({
            issuer: e.COVE_OIDC_ISSUER,
            audience: Object.freeze(e.COVE_OIDC_AUDIENCE),
            clusterScopes: Object.freeze(e.COVE_OIDC_CLUSTER_SCOPES),
            readScopes: Object.freeze(e.COVE_OIDC_READ_SCOPES),
            requiredClaims: Object.freeze(e.COVE_OIDC_REQUIRED_CLAIMS),
            teamClaim: e.COVE_OIDC_TEAM_CLAIM,
            maxLifetimeS: e.COVE_OIDC_MAX_TOKEN_LIFETIME_S,
            clockToleranceS: e.COVE_OIDC_CLOCK_TOLERANCE_S,
            jwksCooldownMs: e.COVE_OIDC_JWKS_COOLDOWN_MS,
          })
        : undefined,
    publicGrants: e.COVE_PUBLIC_GRANTS === 'on',
    controlLinkOutbound: e.COVE_CONTROL_LINK_OUTBOUND === 'on',
    controlLinkIdleMs: e.COVE_CONTROL_LINK_IDLE_MS,
    publicCorsOrigins: Object.freeze(e.COVE_PUBLIC_CORS_ORIGINS),
  });
}

function otlpTarget(url: string | undefined, token: string | undefined): EdgeConfig['telemetry'] {
  return url === undefined ? undefined : Object.freeze({ url: url.replace(/\/+$/, ''), token });
}

function loadStorage(e: z.infer<typeof EnvSchema>): EdgeStorageConfig {
  const credentials =
    e.COVE_STORAGE_ACCESS_KEY_ID !== undefined && e.COVE_STORAGE_SECRET_ACCESS_KEY !== undefined
      ? { accessKeyId: e.COVE_STORAGE_ACCESS_KEY_ID, secretAccessKey: e.COVE_STORAGE_SECRET_ACCESS_KEY }
      : undefined;
  // Already validated by the schema.
  const storage = parseStorageUrl(e.COVE_STORAGE_URL, credentials ? { credentials } : {});
  return Object.freeze({
    storage: Object.freeze(storage),
    uploadSecret: e.COVE_UPLOAD_SECRET,
    publicUrl: e.COVE_EDGE_PUBLIC_URL?.replace(/\/+$/, ''),
    uploadMaxBytes: e.COVE_UPLOAD_MAX_BYTES,
  });
}

/** Read the PEM files and check they form a usable TLS context, so a bad file fails start-up, not the first handshake. */
function loadTls(certPath: string | undefined, keyPath: string | undefined, clientCaPath: string | undefined): EdgeTlsConfig | undefined {
  if (certPath === undefined || keyPath === undefined) return undefined;
  const issues: string[] = [];
  const read = (name: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      issues.push(`${name}: cannot read ${path}: ${(err as Error).message}`);
      return Buffer.alloc(0);
    }
  };
  const cert = read('COVE_EDGE_TLS_CERT', certPath);
  const key = read('COVE_EDGE_TLS_KEY', keyPath);
  const clientCa = clientCaPath === undefined ? undefined : read('COVE_EDGE_TLS_CLIENT_CA', clientCaPath);
  if (issues.length === 0) {
    try {
      createSecureContext({ cert, key, ca: clientCa });
    } catch (err) {
      issues.push(`COVE_EDGE_TLS_CERT/COVE_EDGE_TLS_KEY: not a usable PEM certificate and key: ${(err as Error).message}`);
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return Object.freeze({ cert, key, clientCa });
}

function loadTrafficTls(port: number | undefined, certPath: string | undefined, keyPath: string | undefined): EdgeConfig['trafficTls'] {
  if (port === undefined || certPath === undefined || keyPath === undefined) return undefined;
  try {
    const cert = readFileSync(certPath);
    const key = readFileSync(keyPath);
    createSecureContext({ cert, key });
    return Object.freeze({ port, certPath, keyPath, cert, key });
  } catch (err) {
    throw new ConfigError([`COVE_EDGE_TRAFFIC_TLS_CERT/COVE_EDGE_TRAFFIC_TLS_KEY: not a readable, usable PEM certificate and key: ${(err as Error).message}`]);
  }
}
