// Orchestrator configuration: one zod schema over the environment, parsed once in main.ts and frozen.
// Defaults fit the single-host `cove up`; nothing below main.ts reads process.env.

import { readFileSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseStorageUrl } from '@cove/storage';
import { ENVD_LOGS_MAX_WAIT_MS } from '@cove/contracts/telemetry';
import { z } from 'zod';
import { packageRoot } from './package-info.js';
import { BACKGROUND_TEMPLATES, defaultGuestDir } from './code-interpreter.js';

/** packages/envd/dist/bundle, next to this package in the repository. */
function defaultEnvdBundle(): string {
  return resolve(packageRoot(), '..', 'envd', 'dist', 'bundle');
}

const port = z.coerce.number().int().min(0).max(65535);
const posInt = z.coerce.number().int().positive();

/** `base=2,python=1` → { base: 2, python: 1 }. An empty string disables warm pools. */
const warmPool = z
  .string()
  .transform((raw, ctx) => {
    const out: Record<string, number> = {};
    for (const part of raw.split(',').map((p) => p.trim()).filter(Boolean)) {
      const m = /^([a-z0-9][a-z0-9-]{0,62})=(\d{1,4})$/.exec(part);
      if (!m) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `bad warm pool entry "${part}" (want <template>=<size>)` });
        return z.NEVER;
      }
      out[m[1]!] = Number(m[2]);
    }
    return out;
  });

const envSchema = z.object({
  COVE_NODE_ID: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/).default(hostname()),
  COVE_NODE_TOKEN: z.string().min(16, 'COVE_NODE_TOKEN must be at least 16 characters'),
  /**
   * Signs and verifies snapshot and build manifests in cluster storage (the same on every node, never given to
   * anything else): required, there is no default a deployment could forget to change. `cove up` generates it.
   */
  COVE_ARTIFACT_KEY: z.string().min(32, 'COVE_ARTIFACT_KEY must be at least 32 characters'),
  COVE_ORCH_HOST: z.string().min(1).default('127.0.0.1'),
  COVE_ORCH_RPC_PORT: port.default(5008),
  COVE_ORCH_PROXY_PORT: port.default(5007),
  COVE_ORCH_ADVERTISE_HOST: z.string().min(1).optional(),
  COVE_DATA_DIR: z.string().min(1).default('/var/lib/cove'),
  COVE_ENVD_BUNDLE: z.string().min(1).optional(),
  /** The code-interpreter guest dir lent to code-interpreter-v1 slots (default packages/code-interpreter/dist/guest). */
  COVE_CODE_INTERPRETER_GUEST_DIR: z.string().min(1).optional(),
  COVE_TEMPLATE_CACHE_DIR: z.string().min(1).optional(),
  COVE_EDGE_URL: z.string().url().optional(),
  /** PEM file of extra CAs trusted for an `https://` COVE_EDGE_URL (on top of the system roots). */
  COVE_EDGE_CA: z.string().min(1).optional(),
  /** PEM files of this node's client certificate and key, for an edge requiring mutual TLS. */
  COVE_EDGE_CLIENT_CERT: z.string().min(1).optional(),
  COVE_EDGE_CLIENT_KEY: z.string().min(1).optional(),
  COVE_HEARTBEAT_INTERVAL_MS: posInt.default(2000),
  // One ready code-interpreter slot: its idle server and kernels cost their memory (~100-150 MiB) all the time,
  // a miss costs a kernel start (seconds) on the Create; one covers the first Create while the pool refills.
  COVE_WARM_POOL: warmPool.default('base=2,code-interpreter-v1=1,desktop=1'),
  // The built-in templates beyond base this node builds in the background and serves (comma list), or `none`: a node
  // short of disk or CPU (each takes minutes and ~1–2 GB to build) leaves them to others; placement skips it for them.
  COVE_BUILTIN_TEMPLATES: z
    .string()
    .transform((raw, ctx) => {
      const ids = raw.trim() === 'none' ? [] : raw.split(',').map((p) => p.trim()).filter(Boolean);
      const unknown = ids.filter((id) => !BACKGROUND_TEMPLATES.includes(id));
      if (unknown.length > 0) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `not a built-in template: ${unknown.join(', ')} (want some of ${BACKGROUND_TEMPLATES.join(', ')}, or none)` });
        return z.NEVER;
      }
      return [...new Set(ids)];
    })
    .default(BACKGROUND_TEMPLATES.join(',')),
  COVE_WARM_POOL_CONCURRENCY: posInt.default(2),
  /** Slots the node boots at once over its pools and Creates (boot-permits.ts); default: its CPUs, at least 2. */
  COVE_BOOT_CONCURRENCY: posInt.default(Math.max(2, availableParallelism())),
  /**
   * Creates that may wait for a boot at once; one more is refused (node full). Default 16 per boot permit: a burst of
   * 20 on a `cove up` node (2 CPUs, 2 warm slots, refills holding permits too) is taken whole, and under sustained
   * overload a Create waits ~16 boot times, not the whole backlog (docs/performance.md "Sustained creates").
   */
  COVE_BOOT_QUEUE: z.coerce.number().int().nonnegative().optional(),
  /**
   * The longest a Create may expect to wait for a boot (ms): the Creates ahead of it, over the node's permits, times
   * the node's recent boot time. Past it the Create is refused (node full) even below COVE_BOOT_QUEUE: under
   * sustained overload a boot takes seconds, and a count alone let Creates wait 13-23 s (docs/performance.md
   * "Sustained creates"). 10 s keeps a waiting Create well inside the SDK's request timeout.
   */
  COVE_BOOT_MAX_WAIT_MS: z.coerce.number().int().nonnegative().default(10_000),
  COVE_MAX_SANDBOXES: posInt.default(100),
  COVE_CPU_OVERCOMMIT: z.coerce.number().positive().default(32),
  COVE_MEMORY_OVERCOMMIT: z.coerce.number().positive().default(1),
  COVE_DEFAULT_VCPU: posInt.default(2),
  COVE_DEFAULT_MEMORY_MB: posInt.default(512),
  COVE_DEFAULT_DISK_MB: posInt.default(1024),
  COVE_SANDBOX_SUBNET: z.string().optional(),
  /** Resolvers the node's egress DNS filter and proxy use for allowed names (comma list of ip[:port]); default the host's. */
  COVE_EGRESS_UPSTREAM_CA: z.string().startsWith('/', 'COVE_EGRESS_UPSTREAM_CA must be an absolute path').optional(),
  COVE_EGRESS_DNS: z.string().regex(/^\d+\.\d+\.\d+\.\d+(:\d{1,5})?(,\d+\.\d+\.\d+\.\d+(:\d{1,5})?)*$/, 'COVE_EGRESS_DNS must be a comma list of ip[:port]').optional(),
  COVE_SANDBOX_BRIDGE: z.string().optional(),
  COVE_RUNTIME_INSTANCE: z.string().regex(/^[a-z][a-z0-9]{0,9}$/).optional(),
  COVE_VETH_PREFIX: z.string().regex(/^[a-z][a-z0-9-]{0,3}$/).optional(),
  COVE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Cluster storage (template layers, manifests, COPY uploads): `file:///dir` or `s3://bucket/prefix?endpoint=…`. */
  COVE_STORAGE_URL: z.string().min(1).optional(),
  /**
   * Team volumes' directory (docs/volumes.md), the same shared directory on every node (NFS/EFS across machines).
   * Default: `<dir>/volumes` of a `file://` COVE_STORAGE_URL; none with S3 storage (volume mounts are refused).
   */
  COVE_VOLUMES_DIR: z.string().min(1).optional(),
  /** S3 keys for an `s3://` COVE_STORAGE_URL; both or neither (neither = the AWS SDK's default chain). */
  COVE_STORAGE_ACCESS_KEY_ID: z.string().min(1).optional(),
  COVE_STORAGE_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  /** Size the node's extracted-layer cache is kept under (least recently used layers no slot uses go first). */
  COVE_LAYER_CACHE_MB: posInt.default(10240),
  /** The cluster's OCI registry (`http(s)://host:port`) template builds pull `fromImage` images through. */
  COVE_REGISTRY_URL: z.string().url().optional(),
  COVE_REGISTRY_USERNAME: z.string().min(1).optional(),
  COVE_REGISTRY_PASSWORD: z.string().min(1).optional(),
  /** Warm slots kept per user-template build, for this many most recently used builds (0 = none). */
  COVE_TEMPLATE_WARM_POOL_SIZE: z.coerce.number().int().min(0).max(16).default(1),
  COVE_TEMPLATE_WARM_POOL_BUILDS: z.coerce.number().int().min(0).max(64).default(4),
  /** How long a user template's ready command may take to succeed before the create fails. */
  COVE_TEMPLATE_READY_TIMEOUT_MS: posInt.default(30_000),
  /** Template builds running at once on this node (each holds one build sandbox at a time). */
  COVE_MAX_BUILDS: z.coerce.number().int().min(1).max(16).default(2),
  // Paused sandboxes kept restorable in place on this node (their disk and memory image); the rest resume from storage.
  COVE_PAUSED_SLOTS: z.coerce.number().int().min(0).max(1000).default(16),
  // Local copies of snapshots kept besides them (for creates from persistent snapshots); storage has them all.
  COVE_LOCAL_SNAPSHOTS: z.coerce.number().int().min(0).max(10_000).default(32),
  /** The cluster's collector (OTLP/HTTP base URL, docs/observability.md); unset = no telemetry is sent. */
  COVE_COLLECTOR_URL: z.string().url().optional(),
  COVE_COLLECTOR_TOKEN: z.string().min(1).optional(),
  /** A customer's own OTLP/HTTP receiver instead of the collector (same token header if one is set). */
  COVE_OTLP_ENDPOINT: z.string().url().optional(),
  /** How often sandbox logs are pulled from envd and gauges exported. */
  COVE_TELEMETRY_LOG_PULL_MS: z.coerce.number().int().min(100).max(60_000).default(2000),
  /** How long envd holds the node's wait for news in an idle sandbox's log ring (one request per idle sandbox per wait). */
  COVE_TELEMETRY_LOG_WAIT_MS: z.coerce.number().int().min(1000).max(ENVD_LOGS_MAX_WAIT_MS).default(25_000),
  COVE_TELEMETRY_METRIC_INTERVAL_MS: z.coerce.number().int().min(100).max(300_000).default(5000),
  /** Log records waiting for the collector at most; beyond it records are dropped and counted. */
  COVE_TELEMETRY_MAX_QUEUE: z.coerce.number().int().min(1).max(1_000_000).default(8192),
}).refine((e) => (e.COVE_EDGE_CLIENT_CERT === undefined) === (e.COVE_EDGE_CLIENT_KEY === undefined), {
  message: 'COVE_EDGE_CLIENT_CERT and COVE_EDGE_CLIENT_KEY must be set together (or neither)',
  path: ['COVE_EDGE_CLIENT_CERT'],
}).refine((e) => (e.COVE_STORAGE_ACCESS_KEY_ID === undefined) === (e.COVE_STORAGE_SECRET_ACCESS_KEY === undefined), {
  message: 'COVE_STORAGE_ACCESS_KEY_ID and COVE_STORAGE_SECRET_ACCESS_KEY must be set together (or neither)',
  path: ['COVE_STORAGE_ACCESS_KEY_ID'],
}).refine((e) => (e.COVE_REGISTRY_USERNAME === undefined) === (e.COVE_REGISTRY_PASSWORD === undefined), {
  message: 'COVE_REGISTRY_USERNAME and COVE_REGISTRY_PASSWORD must be set together (or neither)',
  path: ['COVE_REGISTRY_USERNAME'],
});

export interface OrchestratorConfig {
  readonly nodeId: string;
  readonly nodeToken: string;
  /** COVE_ARTIFACT_KEY: authenticates manifests in cluster storage (src/snapshots, src/templates/manifest.ts). */
  readonly artifactKey: string;
  readonly host: string;
  readonly rpcPort: number;
  readonly proxyPort: number;
  /** Host the edge dials to reach this node (RPC and traffic proxy). */
  readonly advertiseHost: string;
  readonly dataDir: string;
  readonly envdBundle: string;
  /** The code-interpreter guest dir (its `start` runs the server on CODE_INTERPRETER_PORT). */
  readonly codeInterpreterGuestDir: string;
  readonly edgeUrl: string | undefined;
  /** PEM text for an `https://` edge: extra CAs, and a client certificate for mutual TLS. */
  readonly edgeTls: { readonly ca: string | undefined; readonly cert: string | undefined; readonly key: string | undefined };
  readonly heartbeatIntervalMs: number;
  /** Target number of ready warm slots per template. */
  readonly warmPool: Readonly<Record<string, number>>;
  readonly warmPoolConcurrency: number;
  /** Slots booted at once over the pools and the Creates that missed them. */
  readonly bootConcurrency: number;
  /** Creates that may wait for a boot at once. */
  readonly bootQueue: number;
  /** The longest expected wait for a boot a Create is let in for (ms). */
  readonly bootWaitMs: number;
  /** Built-in templates (of BACKGROUND_TEMPLATES) this node builds in the background and serves. */
  readonly builtinTemplates: readonly string[];
  readonly maxSandboxes: number;
  /** vCPUs handed out may reach cpus × this; sandboxes rarely use their whole share. */
  readonly cpuOvercommit: number;
  /** Memory handed out may reach total memory × this. */
  readonly memoryOvercommit: number;
  /** Limits of warm slots and the disk size warm slots are booted with. */
  readonly defaults: { readonly vcpu: number; readonly memoryMb: number; readonly diskMb: number };
  /** Passed through to the runtime constructor untouched; undefined = the runtime's default. */
  readonly runtime: {
    readonly subnet: string | undefined;
    readonly bridge: string | undefined;
    /** Names the runtime's host objects (bridge, nft table, cgroup parent); two nodes on one host differ. */
    readonly instance: string | undefined;
    readonly vethPrefix: string | undefined;
    /** Cache of built templates (default <dataDir>/templates). */
    readonly templateCacheDir: string | undefined;
    /** Resolvers of the node's egress services (COVE_EGRESS_DNS); undefined = the host's. */
    readonly egressDns: string[] | undefined;
    /** COVE_EGRESS_UPSTREAM_CA: a PEM file of extra CAs the egress proxy trusts upstream when it terminates TLS (tests). */
    readonly egressUpstreamCaFile: string | undefined;
  };
  readonly logLevel: z.infer<typeof envSchema>['COVE_LOG_LEVEL'];
  /** Cluster storage; url defaults to `file://<dataDir>/storage`. Keys only for S3 (else the SDK's chain). */
  readonly storage: { readonly url: string; readonly accessKeyId: string | undefined; readonly secretAccessKey: string | undefined };
  /** Team volumes' shared directory (COVE_VOLUMES_DIR); undefined = this node refuses volume mounts. */
  readonly volumesDir: string | undefined;
  /** Bound of the node's layer cache (`<dataDir>/l`), in bytes. */
  readonly layerCacheBytes: number;
  /** The cluster's OCI registry for image pulls; undefined = image builds are refused. */
  readonly registry: { readonly url: string | undefined; readonly username: string | undefined; readonly password: string | undefined };
  /** Sandboxes of user templates (template_id + build_id). */
  readonly maxBuilds: number;
  /** Paused slots kept in place for fast resumes on this node. */
  readonly pausedSlots: number;
  /** Local copies of committed snapshots kept on this node. */
  readonly localSnapshots: number;
  /** Where logs and metrics go (OTLP/HTTP JSON); undefined = telemetry off. */
  readonly telemetry:
    | {
        readonly url: string;
        readonly token: string | undefined;
        readonly logPullMs: number;
        readonly logWaitMs: number;
        readonly metricIntervalMs: number;
        readonly maxQueue: number;
      }
    | undefined;
  readonly userTemplates: {
    /** Warm slots per build, kept for the `warmBuilds` most recently used builds. */
    readonly warmPerBuild: number;
    readonly warmBuilds: number;
    /** Bound on a build's ready command (polled every 200 ms) before a create fails. */
    readonly readyTimeoutMs: number;
  };
}

export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`invalid orchestrator configuration:\n  ${issues.join('\n  ')}`);
    this.name = new.target.name;
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Parses the environment; throws ConfigError listing every bad field at once. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): OrchestratorConfig {
  // Empty strings mean "unset" so `FOO= cmd` falls back to the default, except COVE_WARM_POOL where "" disables pools.
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('COVE_') || v === undefined) continue;
    if (v === '' && k !== 'COVE_WARM_POOL') continue;
    cleaned[k] = v;
  }
  const parsed = envSchema.safeParse(cleaned);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.') || 'env'}: ${i.message}`));
  }
  const e = parsed.data;
  const issues: string[] = [];
  const pem = (name: string, path: string | undefined): string | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      issues.push(`${name}: cannot read ${path}: ${(err as Error).message}`);
      return undefined;
    }
  };
  const edgeTls = { ca: pem('COVE_EDGE_CA', e.COVE_EDGE_CA), cert: pem('COVE_EDGE_CLIENT_CERT', e.COVE_EDGE_CLIENT_CERT), key: pem('COVE_EDGE_CLIENT_KEY', e.COVE_EDGE_CLIENT_KEY) };
  const storageUrl = e.COVE_STORAGE_URL ?? pathToFileURL(join(resolve(e.COVE_DATA_DIR), 'storage')).href;
  try {
    parseStorageUrl(storageUrl);
  } catch (err) {
    issues.push(`COVE_STORAGE_URL: ${(err as Error).message}`);
  }
  // A pool of a built-in template the node does not build would wait for it forever.
  for (const id of Object.keys(e.COVE_WARM_POOL)) {
    if (BACKGROUND_TEMPLATES.includes(id) && !e.COVE_BUILTIN_TEMPLATES.includes(id) && (e.COVE_WARM_POOL[id] ?? 0) > 0) {
      issues.push(`COVE_WARM_POOL: ${id} is not among COVE_BUILTIN_TEMPLATES, so this node never has it to pool`);
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return deepFreeze({
    nodeId: e.COVE_NODE_ID,
    nodeToken: e.COVE_NODE_TOKEN,
    artifactKey: e.COVE_ARTIFACT_KEY,
    host: e.COVE_ORCH_HOST,
    rpcPort: e.COVE_ORCH_RPC_PORT,
    proxyPort: e.COVE_ORCH_PROXY_PORT,
    advertiseHost: e.COVE_ORCH_ADVERTISE_HOST ?? e.COVE_ORCH_HOST,
    dataDir: resolve(e.COVE_DATA_DIR),
    volumesDir: e.COVE_VOLUMES_DIR ? resolve(e.COVE_VOLUMES_DIR) : storageUrl.startsWith('file:') ? join(fileURLToPath(storageUrl), 'volumes') : undefined,
    envdBundle: resolve(e.COVE_ENVD_BUNDLE ?? defaultEnvdBundle()),
    codeInterpreterGuestDir: resolve(e.COVE_CODE_INTERPRETER_GUEST_DIR ?? defaultGuestDir()),
    edgeUrl: e.COVE_EDGE_URL?.replace(/\/+$/, ''),
    edgeTls,
    heartbeatIntervalMs: e.COVE_HEARTBEAT_INTERVAL_MS,
    warmPool: e.COVE_WARM_POOL,
    warmPoolConcurrency: e.COVE_WARM_POOL_CONCURRENCY,
    bootConcurrency: e.COVE_BOOT_CONCURRENCY,
    bootQueue: e.COVE_BOOT_QUEUE ?? 16 * e.COVE_BOOT_CONCURRENCY,
    bootWaitMs: e.COVE_BOOT_MAX_WAIT_MS,
    builtinTemplates: e.COVE_BUILTIN_TEMPLATES,
    maxSandboxes: e.COVE_MAX_SANDBOXES,
    cpuOvercommit: e.COVE_CPU_OVERCOMMIT,
    memoryOvercommit: e.COVE_MEMORY_OVERCOMMIT,
    defaults: { vcpu: e.COVE_DEFAULT_VCPU, memoryMb: e.COVE_DEFAULT_MEMORY_MB, diskMb: e.COVE_DEFAULT_DISK_MB },
    runtime: {
      subnet: e.COVE_SANDBOX_SUBNET,
      bridge: e.COVE_SANDBOX_BRIDGE,
      instance: e.COVE_RUNTIME_INSTANCE,
      vethPrefix: e.COVE_VETH_PREFIX,
      templateCacheDir: e.COVE_TEMPLATE_CACHE_DIR ? resolve(e.COVE_TEMPLATE_CACHE_DIR) : undefined,
      egressDns: e.COVE_EGRESS_DNS ? e.COVE_EGRESS_DNS.split(',') : undefined,
      egressUpstreamCaFile: e.COVE_EGRESS_UPSTREAM_CA,
    },
    logLevel: e.COVE_LOG_LEVEL,
    storage: {
      url: storageUrl,
      accessKeyId: e.COVE_STORAGE_ACCESS_KEY_ID,
      secretAccessKey: e.COVE_STORAGE_SECRET_ACCESS_KEY,
    },
    layerCacheBytes: e.COVE_LAYER_CACHE_MB * 1024 * 1024,
    registry: { url: e.COVE_REGISTRY_URL?.replace(/\/+$/, ''), username: e.COVE_REGISTRY_USERNAME, password: e.COVE_REGISTRY_PASSWORD },
    maxBuilds: e.COVE_MAX_BUILDS,
    pausedSlots: e.COVE_PAUSED_SLOTS,
    localSnapshots: e.COVE_LOCAL_SNAPSHOTS,
    telemetry:
      (e.COVE_OTLP_ENDPOINT ?? e.COVE_COLLECTOR_URL) === undefined
        ? undefined
        : {
            url: (e.COVE_OTLP_ENDPOINT ?? e.COVE_COLLECTOR_URL)!.replace(/\/+$/, ''),
            token: e.COVE_COLLECTOR_TOKEN,
            logPullMs: e.COVE_TELEMETRY_LOG_PULL_MS,
            logWaitMs: e.COVE_TELEMETRY_LOG_WAIT_MS,
            metricIntervalMs: e.COVE_TELEMETRY_METRIC_INTERVAL_MS,
            maxQueue: e.COVE_TELEMETRY_MAX_QUEUE,
          },
    userTemplates: {
      warmPerBuild: e.COVE_TEMPLATE_WARM_POOL_SIZE,
      warmBuilds: e.COVE_TEMPLATE_WARM_POOL_BUILDS,
      readyTimeoutMs: e.COVE_TEMPLATE_READY_TIMEOUT_MS,
    },
  });
}
