// A pino destination that turns a component's own log lines into OTLP log records (`cove.log.kind=component`).
// pino has already redacted secrets by the time a line is written here.

import { Writable } from 'node:stream';
import { COMPONENT_LOG_KIND, type LogLevel } from '@cove/contracts/telemetry';
import type { OtlpSender } from './otlp-sender.js';

const MAX_FIELDS = 32;
const MAX_VALUE = 1024;

function levelOf(n: unknown): LogLevel {
  const v = typeof n === 'number' ? n : 30;
  if (v < 30) return 'debug';
  if (v < 40) return 'info';
  if (v < 50) return 'warn';
  return 'error';
}

/** Lines at `minLevel` (pino number) and above are sent; the stream never blocks or fails the logger. */
export function otlpLogStream(sender: OtlpSender, minLevel = 30): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (typeof rec.level === 'number' && rec.level < minLevel) continue;
        const fields: Record<string, string | number | boolean> = {};
        let n = 0;
        for (const [k, v] of Object.entries(rec)) {
          if (k === 'level' || k === 'time' || k === 'msg' || n >= MAX_FIELDS) continue;
          if (typeof v === 'number' || typeof v === 'boolean') fields[k] = v;
          else if (typeof v === 'string') fields[k] = v.slice(0, MAX_VALUE);
          else if (k === 'err' && v && typeof v === 'object') fields[k] = String((v as { message?: unknown }).message ?? '').slice(0, MAX_VALUE);
          else continue;
          n++;
        }
        sender.emit({
          kind: COMPONENT_LOG_KIND,
          level: levelOf(rec.level),
          message: typeof rec.msg === 'string' ? rec.msg : '',
          ids: {},
          fields,
          time: typeof rec.time === 'number' ? rec.time : undefined,
        });
      }
      done();
    },
  });
}
