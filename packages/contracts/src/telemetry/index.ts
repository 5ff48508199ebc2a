// The cluster's telemetry vocabulary (docs/observability.md): one definition of every OTLP attribute and metric
// name Cove's senders write and the collector reads, and of the anonymized metrics a cluster may send out.
import { z } from 'zod';

/** OTLP resource and record attributes. */
export const Attr = {
  serviceName: 'service.name',
  serviceInstanceId: 'service.instance.id',
  logKind: 'cove.log.kind',
  teamId: 'cove.team_id',
  sandboxId: 'cove.sandbox_id',
  templateId: 'cove.template_id',
  buildId: 'cove.build_id',
  buildStep: 'cove.build.step',
} as const;

export type LogKind = 'sandbox' | 'build';
/**
 * `cove.log.kind` of a component's own log lines (an edge's, say): neither a sandbox's nor a build's, never
 * served through the sandbox or build log routes; kept for operators (and their own OTLP backends).
 */
export const COMPONENT_LOG_KIND = 'component';

/** Sandbox gauges (attributes teamId, sandboxId). Bytes for memory and disk. */
export const SandboxMetric = {
  cpuUsedPct: 'cove.sandbox.cpu.used_pct',
  cpuCount: 'cove.sandbox.cpu.count',
  memoryUsed: 'cove.sandbox.memory.used',
  memoryTotal: 'cove.sandbox.memory.total',
  diskUsed: 'cove.sandbox.disk.used',
  diskTotal: 'cove.sandbox.disk.total',
} as const;

/**
 * Node gauges an orchestrator sends about its whole machine (resource `service.instance.id` = node id), the only
 * source of the anonymized report's node figures and counts. Bytes for memory and disk. The `*.total` names
 * below `builds`/`errors` are cumulative sums since the sender started (a restart resets them; the collector
 * reports the increase per report interval).
 */
export const NodeMetric = {
  cpuCount: 'cove.node.cpu.count',
  cpuUsedPct: 'cove.node.cpu.used_pct',
  memoryTotal: 'cove.node.memory.total',
  memoryUsed: 'cove.node.memory.used',
  diskTotal: 'cove.node.disk.total',
  diskUsed: 'cove.node.disk.used',
  sandboxesRunning: 'cove.node.sandboxes.running',
  sandboxesPaused: 'cove.node.sandboxes.paused',
  sandboxesStarting: 'cove.node.sandboxes.starting',
  buildsRunning: 'cove.node.builds.running',
  buildsSucceededTotal: 'cove.node.builds.succeeded.total',
  buildsFailedTotal: 'cove.node.builds.failed.total',
  sandboxCreateFailedTotal: 'cove.node.sandbox_create.failed.total',
  resumeFailedTotal: 'cove.node.resume.failed.total',
  /** Telemetry records a sender dropped (collector down, queue full): `cove_telemetry_dropped_total` as OTLP. */
  telemetryDroppedTotal: 'cove.telemetry.dropped.total',
} as const;

/** E2B's log levels, and the OTLP severity numbers they map from (debug 5-8, info 9-12, warn 13-16, error 17+). */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export function levelOfSeverity(n: number | undefined): LogLevel {
  if (n === undefined || n === 0) return 'info';
  if (n <= 8) return 'debug';
  if (n <= 12) return 'info';
  if (n <= 16) return 'warn';
  return 'error';
}
export const SEVERITY_OF_LEVEL: Record<LogLevel, number> = { debug: 5, info: 9, warn: 13, error: 17 };

const count = z.number().int().min(0).max(1e9);
const bytes = z.number().int().min(0).max(2 ** 53);
const pct = z.number().min(0).max(100_000);

/**
 * What a cluster may tell the control plane about itself (POST /cluster/v1/metrics). Strict: a property the
 * schema does not name is refused, so no id, name, address or text can ride along. Nodes are an opaque index.
 */
export const ClusterMetricsReport = z
  .object({
    schema: z.literal('cove.cluster-metrics.v1'),
    sampledAt: z.string().datetime(),
    nodes: z
      .array(
        z
          .object({
            index: z.number().int().min(0).max(10_000),
            healthy: z.boolean(),
            cpuCount: count,
            cpuUsedPct: pct,
            memoryBytes: bytes,
            memoryUsedBytes: bytes,
            diskBytes: bytes,
            diskUsedBytes: bytes,
          })
          .strict(),
      )
      .max(10_000),
    sandboxes: z.object({ running: count, paused: count, starting: count }).strict(),
    builds: z.object({ running: count, succeeded: count, failed: count }).strict(),
    errors: z.object({ sandboxCreateFailed: count, resumeFailed: count, telemetryDropped: count }).strict(),
  })
  .strict();
export type ClusterMetricsReport = z.infer<typeof ClusterMetricsReport>;

/** Sender-side counter of records a sender dropped (queue full, collector down); Prometheus name. */
export const TELEMETRY_DROPPED_METRIC = 'cove_telemetry_dropped_total';

/** envd's internal log route (init token only; the node proxy refuses it from outside). */
export const ENVD_LOGS_PATH = '/cove/logs';
/** Bounds of one envd log entry and of one reply of the route (envd truncates to them; the node refuses more). */
export const ENVD_LOG_LIMITS = {
  messageChars: 4096,
  fields: 32,
  fieldKeyChars: 64,
  fieldValueChars: 1024,
  /** Entries one reply may hold. */
  maxEntries: 1000,
} as const;

const fieldValue = z.union([z.string().max(ENVD_LOG_LIMITS.fieldValueChars), z.number(), z.boolean()]);
/** One entry of envd's log ring. `seq` grows by one per entry for envd's life. */
export const EnvdLogEntry = z
  .object({
    seq: z.number().int().min(1),
    ts: z.string().datetime(),
    level: z.enum(['debug', 'info', 'warn', 'error']),
    message: z.string().max(ENVD_LOG_LIMITS.messageChars),
    fields: z
      .record(z.string().max(ENVD_LOG_LIMITS.fieldKeyChars), fieldValue)
      .refine((f) => Object.keys(f).length <= ENVD_LOG_LIMITS.fields, 'too many fields'),
  })
  .strict();
export type EnvdLogEntry = z.infer<typeof EnvdLogEntry>;
/** `GET /cove/logs?after=<seq>&limit=<n>`: entries after `after`, and how many after it the ring overwrote. */
export const EnvdLogsReply = z
  .object({
    entries: z.array(EnvdLogEntry).max(ENVD_LOG_LIMITS.maxEntries),
    dropped: z.number().int().min(0),
    /** The seq to ask `after` next time. */
    next: z.number().int().min(0),
  })
  .strict();
export type EnvdLogsReply = z.infer<typeof EnvdLogsReply>;

/**
 * envd's wait for news in its log ring (init token only): `GET /cove/logs/wait?after=<seq>&wait=<ms>` answers at
 * once when the ring's last seq is not `after` (new entries, or an envd that began again), else when one is
 * recorded or `wait` ms have passed. The node holds one per sandbox instead of pulling an idle ring every round.
 */
export const ENVD_LOGS_WAIT_PATH = '/cove/logs/wait';
/** The longest wait envd holds (a larger `wait` is cut to it). */
export const ENVD_LOGS_MAX_WAIT_MS = 30_000;
export const EnvdLogsWaitReply = z
  .object({
    /** The ring's last seq (0 before the first entry). */
    last: z.number().int().min(0),
  })
  .strict();
export type EnvdLogsWaitReply = z.infer<typeof EnvdLogsWaitReply>;

/**
 * On envd's `/init` answer: the ring's last seq before this /init's own record. A new sandbox's logs begin after it,
 * so what a pooled slot recorded before its claim (envd's start, the warm-up) is the pool's, not the sandbox's.
 */
export const ENVD_INIT_LOG_SEQ_HEADER = 'x-cove-log-seq';
