// A real OTLP/HTTP stand-in for tests: records every JSON body posted to /v1/logs and /v1/metrics with its
// bearer token, and can be told to refuse (503) to play a collector that is down.

import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

export interface OtlpLogRecord {
  resource: Record<string, unknown>;
  severityNumber?: number;
  body: unknown;
  timeUnixNano?: string;
  attributes: Record<string, unknown>;
}

export interface OtlpPoint {
  resource: Record<string, unknown>;
  name: string;
  value: number;
  attributes: Record<string, unknown>;
}

export interface OtlpStandIn {
  url: string;
  /** Bodies received, in order, with the authorization header they came with. */
  posts: { path: string; authorization: string | undefined; body: unknown }[];
  refuse: boolean;
  logs(): OtlpLogRecord[];
  points(): OtlpPoint[];
  close(): Promise<void>;
}

type KV = { key: string; value: Record<string, unknown> };
function anyValue(v: Record<string, unknown> | undefined): unknown {
  if (!v) return undefined;
  if ('stringValue' in v) return v.stringValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return v.doubleValue;
  if ('boolValue' in v) return v.boolValue;
  return v;
}
function attrs(list: KV[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of list ?? []) out[kv.key] = anyValue(kv.value);
  return out;
}

export async function startOtlpStandIn(maxBodyBytes = 8 * 1024 * 1024): Promise<OtlpStandIn> {
  const state: OtlpStandIn = {
    url: '',
    posts: [],
    refuse: false,
    logs() {
      const out: OtlpLogRecord[] = [];
      for (const p of state.posts) {
        if (p.path !== '/v1/logs') continue;
        for (const rl of (p.body as { resourceLogs?: { resource?: { attributes?: KV[] }; scopeLogs?: { logRecords?: Record<string, unknown>[] }[] }[] }).resourceLogs ?? []) {
          const resource = attrs(rl.resource?.attributes);
          for (const sl of rl.scopeLogs ?? []) {
            for (const r of sl.logRecords ?? []) {
              out.push({
                resource,
                severityNumber: r.severityNumber as number | undefined,
                body: anyValue(r.body as Record<string, unknown>),
                timeUnixNano: r.timeUnixNano as string | undefined,
                attributes: attrs(r.attributes as KV[]),
              });
            }
          }
        }
      }
      return out;
    },
    points() {
      const out: OtlpPoint[] = [];
      for (const p of state.posts) {
        if (p.path !== '/v1/metrics') continue;
        for (const rm of (p.body as { resourceMetrics?: { resource?: { attributes?: KV[] }; scopeMetrics?: { metrics?: Record<string, unknown>[] }[] }[] }).resourceMetrics ?? []) {
          const resource = attrs(rm.resource?.attributes);
          for (const sm of rm.scopeMetrics ?? []) {
            for (const m of sm.metrics ?? []) {
              const data = (m.gauge ?? m.sum) as { dataPoints?: Record<string, unknown>[] } | undefined;
              for (const dp of data?.dataPoints ?? []) {
                out.push({ resource, name: m.name as string, value: Number(dp.asDouble ?? dp.asInt ?? NaN), attributes: attrs(dp.attributes as KV[]) });
              }
            }
          }
        }
      }
      return out;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= maxBodyBytes) chunks.push(c);
    });
    req.on('end', () => {
      if (state.refuse) {
        res.writeHead(503).end();
        return;
      }
      try {
        const body: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        state.posts.push({ path: req.url ?? '', authorization: req.headers.authorization, body });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}
