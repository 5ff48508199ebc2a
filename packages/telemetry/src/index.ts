export { OtlpSender, type OtlpSenderOptions, type LogRecordInput, type DroppedCounts } from './otlp-sender.js';
export { METRICS_PATH, componentRegistry, requestMetrics, serveMetrics, type RequestMetrics } from './prometheus.js';
export { Counter, Gauge, Histogram, Registry } from './prometheus.js';
export { otlpLogStream } from './pino-stream.js';
