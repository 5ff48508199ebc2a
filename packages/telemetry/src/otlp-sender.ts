// One OTLP/HTTP (JSON) sender per process, on OpenTelemetry's JS SDK: a LoggerProvider with a batch processor
// and a MeterProvider with a periodic reader, both pointed at the cluster's collector (docs/observability.md).
// The queue in front of the exporter is bounded and emit() never waits: a collector that is down or slow costs
// records (counted), never a Create or a command.

import type { ExportResult } from '@opentelemetry/core';
import type { Attributes, Meter } from '@opentelemetry/api';
import type { AnyValueMap } from '@opentelemetry/api-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider, type LogRecordExporter, type ReadableLogRecord } from '@opentelemetry/sdk-logs';
import {
  AggregationTemporality,
  MeterProvider,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { Attr, NodeMetric, SEVERITY_OF_LEVEL, type COMPONENT_LOG_KIND, type LogKind, type LogLevel } from '@cove/contracts/telemetry';

export interface OtlpSenderOptions {
  /** Base URL of the OTLP/HTTP receiver (COVE_COLLECTOR_URL); `/v1/logs` and `/v1/metrics` are appended. */
  url: string;
  /** Sent as `Authorization: Bearer <token>` (COVE_COLLECTOR_TOKEN). */
  token?: string;
  /** `service.name`: cove-orchestrator, cove-edge. */
  serviceName: string;
  /** `service.instance.id`: the node or edge id. */
  instanceId: string;
  /** Log records waiting for export at most; more are dropped and counted. */
  maxQueue?: number;
  /** How often gauges are read and exported. */
  metricIntervalMs?: number;
  /** How long one export may take (per attempt and retries). */
  timeoutMs?: number;
}

export interface LogRecordInput {
  kind: LogKind | typeof COMPONENT_LOG_KIND;
  level: LogLevel;
  message: string;
  /** Identity attributes (`Attr.*`), set by the sender only — never taken from what a sandbox said. */
  ids: Partial<Record<(typeof Attr)[keyof typeof Attr], string>>;
  /** Free fields of the entry (become the entry's `fields`). */
  fields?: Record<string, string | number | boolean>;
  /** Epoch ms; defaults to now. */
  time?: number;
}

export interface DroppedCounts {
  logs: number;
  metrics: number;
}

const DEFAULT_MAX_QUEUE = 8192;
const BATCH = 512;

/** Counts what the exporter could not deliver and frees the queue slots of everything that left it. */
class CountingLogExporter implements LogRecordExporter {
  constructor(
    private readonly inner: LogRecordExporter,
    private readonly done: (n: number, ok: boolean) => void,
  ) {}
  export(logs: ReadableLogRecord[], cb: (r: ExportResult) => void): void {
    let settled = false;
    this.inner.export(logs, (r) => {
      if (!settled) this.done(logs.length, r.code === 0);
      settled = true;
      cb(r);
    });
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

class CountingMetricExporter implements PushMetricExporter {
  constructor(
    private readonly inner: PushMetricExporter,
    private readonly failed: (points: number) => void,
  ) {}
  export(metrics: ResourceMetrics, cb: (r: ExportResult) => void): void {
    this.inner.export(metrics, (r) => {
      if (r.code !== 0) {
        let n = 0;
        for (const s of metrics.scopeMetrics) for (const m of s.metrics) n += m.dataPoints.length;
        this.failed(n);
      }
      cb(r);
    });
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
  selectAggregationTemporality(): AggregationTemporality {
    return AggregationTemporality.CUMULATIVE;
  }
}

/** The process's OTLP sender: `emit()` a log record, register gauges on `meter`. */
export class OtlpSender {
  readonly meter: Meter;
  private readonly loggerProvider: LoggerProvider;
  private readonly meterProvider: MeterProvider;
  private readonly logger;
  private readonly maxQueue: number;
  /** Records handed to the processor and not yet settled by an export. */
  private pending = 0;
  private readonly counts: DroppedCounts = { logs: 0, metrics: 0 };
  private closed = false;

  constructor(opts: OtlpSenderOptions) {
    const base = opts.url.replace(/\/+$/, '');
    const headers: Record<string, string> = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
    const timeoutMillis = opts.timeoutMs ?? 10_000;
    this.maxQueue = opts.maxQueue ?? DEFAULT_MAX_QUEUE;
    const resource = resourceFromAttributes({ [Attr.serviceName]: opts.serviceName, [Attr.serviceInstanceId]: opts.instanceId });

    const logExporter = new CountingLogExporter(new OTLPLogExporter({ url: `${base}/v1/logs`, headers, timeoutMillis }), (n, ok) => {
      this.pending = Math.max(0, this.pending - n);
      if (!ok) this.counts.logs += n;
    });
    this.loggerProvider = new LoggerProvider({
      resource,
      processors: [
        // The processor's own queue is one larger than ours, so it never drops silently: we drop (and count) first.
        new BatchLogRecordProcessor({
          exporter: logExporter,
          maxQueueSize: this.maxQueue + 1,
          maxExportBatchSize: Math.min(BATCH, this.maxQueue),
          scheduledDelayMillis: 500,
          exportTimeoutMillis: timeoutMillis + 1000,
        }),
      ],
    });
    this.logger = this.loggerProvider.getLogger('cove');

    const metricExporter = new CountingMetricExporter(
      new OTLPMetricExporter({ url: `${base}/v1/metrics`, headers, timeoutMillis }),
      (n) => (this.counts.metrics += n),
    );
    const interval = opts.metricIntervalMs ?? 5000;
    this.meterProvider = new MeterProvider({
      resource,
      readers: [
        new PeriodicExportingMetricReader({
          exporter: metricExporter,
          exportIntervalMillis: interval,
          exportTimeoutMillis: Math.min(interval, timeoutMillis),
        }),
      ],
    });
    this.meter = this.meterProvider.getMeter('cove');
    // Every sender reports its own losses (orchestrators and edges alike): the anonymized report's
    // `errors.telemetryDropped` is the increase of this sum.
    this.meter
      .createObservableCounter(NodeMetric.telemetryDroppedTotal)
      .addCallback((o) => o.observe(this.counts.logs + this.counts.metrics));
  }

  /** Queues one log record; never blocks. Returns false when it was dropped (queue full or closed). */
  emit(r: LogRecordInput): boolean {
    if (this.closed || this.pending >= this.maxQueue) {
      this.counts.logs++;
      return false;
    }
    this.pending++;
    const attributes: AnyValueMap = {};
    for (const [k, v] of Object.entries(r.fields ?? {})) attributes[k] = v;
    // Kind and identity last: a field named like one of them cannot override it.
    attributes[Attr.logKind] = r.kind;
    for (const [k, v] of Object.entries(r.ids)) if (v !== undefined) attributes[k] = v;
    this.logger.emit({
      severityNumber: SEVERITY_OF_LEVEL[r.level],
      severityText: r.level.toUpperCase(),
      body: r.message,
      attributes,
      timestamp: r.time ?? Date.now(),
    });
    return true;
  }

  /** Records the sender dropped so far (queue full, collector down or refusing). */
  dropped(): DroppedCounts {
    return { ...this.counts };
  }

  /** Exports what is queued now (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all([this.loggerProvider.forceFlush(), this.meterProvider.forceFlush().catch(() => undefined)]);
  }

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([this.loggerProvider.shutdown().catch(() => undefined), this.meterProvider.shutdown().catch(() => undefined)]);
  }
}

export type { Attributes };
