export { buildCollector, MAX_BODY_BYTES, type Collector, type ErrorCode } from './app.js';
export { loadConfig, ConfigError, type CollectorConfig } from './config.js';
export { createLogger } from './logger.js';
export { Reporter } from './report.js';
