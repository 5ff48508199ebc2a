// The anonymized report against a real HTTP server standing in for the control plane's intake: it records every
// body and checks it with the strict schema. Canary ids and log text fed in through OTLP never appear in what is
// sent; counts are increases per interval; a report the schema refuses is never sent.

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { ClusterMetricsReport, NodeMetric } from '@cove/contracts/telemetry';
import { pollUntil } from '@cove/test-support/eventually';
import { call, otlpLogs, otlpNodeMetrics, otlpSandboxMetrics, removeDir, startCollector, type Harness } from './fixtures/harness.js';

const CLUSTER_TOKEN = 'cluster-token-for-report-tests-0123';
const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);

interface Received {
  auth: string | undefined;
  path: string | undefined;
  raw: string;
  parsed: ReturnType<typeof ClusterMetricsReport.safeParse>;
}
let server: Server;
let cpUrl: string;
const received: Received[] = [];
let answer = 204;

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = JSON.parse(raw);
      } catch {
        body = undefined;
      }
      received.push({ auth: req.headers.authorization, path: req.url, raw, parsed: ClusterMetricsReport.safeParse(body) });
      res.statusCode = answer;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cpUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

const reportConfig = (intervalMs = 30_000) => ({ report: { controlPlaneUrl: cpUrl, clusterToken: CLUSTER_TOKEN, intervalMs } });

function nodeValues(extra: Record<string, number> = {}) {
  return {
    [NodeMetric.cpuCount]: 8,
    [NodeMetric.cpuUsedPct]: 37.5,
    [NodeMetric.memoryTotal]: 16 * 1024 ** 3,
    [NodeMetric.memoryUsed]: 6 * 1024 ** 3,
    [NodeMetric.diskTotal]: 200 * 1024 ** 3,
    [NodeMetric.diskUsed]: 50 * 1024 ** 3,
    [NodeMetric.sandboxesRunning]: 3,
    [NodeMetric.sandboxesPaused]: 1,
    [NodeMetric.sandboxesStarting]: 0,
    [NodeMetric.buildsRunning]: 1,
    ...extra,
  };
}

test('a report holds only aggregates: no team, sandbox, template, build or node id, no log text', async () => {
  received.length = 0;
  let now = T0;
  const h: Harness = await startCollector(reportConfig(), { now: () => now });
  try {
    const CANARY = {
      team: 'team-CANARY-7f3a',
      sandbox: 'sbx-CANARY-91cd',
      template: 'tpl-CANARY-55e0',
      build: 'bld-CANARY-0b12',
      node: 'node-CANARY-host-10.1.2.3',
      text: 'CANARY-log-line-secret-e8f1',
      field: 'CANARY-field-value-77aa',
    };
    await call(`${h.url}/v1/logs`, {
      body: otlpLogs([
        { team: CANARY.team, sandbox: CANARY.sandbox, tsMs: T0, level: 'error', message: CANARY.text, fields: { env: CANARY.field } },
        { team: CANARY.team, template: CANARY.template, build: CANARY.build, step: '1', tsMs: T0, message: CANARY.text },
      ]),
    });
    await call(`${h.url}/v1/metrics`, { body: otlpSandboxMetrics([{ team: CANARY.team, sandbox: CANARY.sandbox, tsMs: T0, cpuPct: 12 }]) });
    await call(`${h.url}/v1/metrics`, { body: otlpNodeMetrics(CANARY.node, nodeValues({ [NodeMetric.buildsSucceededTotal]: 4, [NodeMetric.buildsFailedTotal]: 1 }), T0) });
    await call(`${h.url}/v1/metrics`, { body: otlpNodeMetrics('node-2', nodeValues({ [NodeMetric.sandboxesRunning]: 2 }), T0) });
    // An edge sends only totals: it is not a node of the report, its drops still count.
    await call(`${h.url}/v1/metrics`, { body: otlpNodeMetrics('edge-CANARY', { [NodeMetric.telemetryDroppedTotal]: 5 }, T0, 'cove-edge') });
    // And one refused record (no sandbox id): dropped telemetry too.
    await call(`${h.url}/v1/logs`, { body: otlpLogs([{ team: CANARY.team, sandbox: null, tsMs: T0, message: CANARY.text }]) });

    now = T0 + 5000;
    assert.equal(await h.collector.reporter!.sendOnce(now), 'sent');
    assert.equal(received.length, 1);
    const r = received[0]!;
    assert.equal(r.path, '/cluster/v1/metrics');
    assert.equal(r.auth, `Bearer ${CLUSTER_TOKEN}`);
    assert.ok(r.parsed.success, JSON.stringify(r.parsed.error?.issues));
    for (const [what, canary] of Object.entries(CANARY)) assert.ok(!r.raw.includes(canary), `${what} leaked into the report`);
    assert.ok(!r.raw.includes('CANARY'));
    assert.deepEqual(r.parsed.data, {
      schema: 'cove.cluster-metrics.v1',
      sampledAt: new Date(T0 + 5000).toISOString(),
      nodes: [0, 1].map((index) => ({
        index,
        healthy: true,
        cpuCount: 8,
        cpuUsedPct: 37.5,
        memoryBytes: 16 * 1024 ** 3,
        memoryUsedBytes: 6 * 1024 ** 3,
        diskBytes: 200 * 1024 ** 3,
        diskUsedBytes: 50 * 1024 ** 3,
      })),
      sandboxes: { running: 5, paused: 2, starting: 0 },
      builds: { running: 2, succeeded: 4, failed: 1 },
      errors: { sandboxCreateFailed: 0, resumeFailed: 0, telemetryDropped: 6 },
    });
  } finally {
    await h.close();
    removeDir(h.dataDir);
  }
});

test('totals are reported as increases; a refused report is carried into the next; a silent node turns unhealthy', async () => {
  received.length = 0;
  let now = T0;
  const h = await startCollector(reportConfig(), { now: () => now });
  try {
    const send = async (ts: number, totals: Record<string, number>) =>
      assert.equal((await call(`${h.url}/v1/metrics`, { body: otlpNodeMetrics('node-a', nodeValues(totals), ts) })).status, 200);
    await send(T0, { [NodeMetric.sandboxCreateFailedTotal]: 2, [NodeMetric.resumeFailedTotal]: 1 });
    assert.equal(await h.collector.reporter!.sendOnce(T0 + 1000), 'sent');
    await send(T0 + 2000, { [NodeMetric.sandboxCreateFailedTotal]: 5, [NodeMetric.resumeFailedTotal]: 1 });
    answer = 503;
    assert.equal(await h.collector.reporter!.sendOnce(T0 + 3000), 'refused');
    answer = 204;
    // The sender restarted: its sum starts again from zero (now 1), on top of the 3 not yet delivered.
    await send(T0 + 4000, { [NodeMetric.sandboxCreateFailedTotal]: 1, [NodeMetric.resumeFailedTotal]: 1 });
    assert.equal(await h.collector.reporter!.sendOnce(T0 + 5000), 'sent');
    const errs = received.map((r) => (r.parsed.success ? r.parsed.data.errors : undefined));
    assert.deepEqual(
      errs.map((e) => e?.sandboxCreateFailed),
      [2, 3, 1],
    );
    assert.deepEqual(
      errs.map((e) => e?.resumeFailed),
      [1, 0, 0],
    );
    // Two minutes of silence: still listed (so the control plane can alert "node missing"), unhealthy, counts 0.
    now = T0 + 125_000;
    assert.equal(await h.collector.reporter!.sendOnce(now), 'sent');
    const last = received.at(-1)!.parsed;
    assert.ok(last.success);
    assert.deepEqual(
      last.data.nodes.map((n) => [n.index, n.healthy]),
      [[0, false]],
    );
    assert.equal(last.data.sandboxes.running, 0);
  } finally {
    await h.close();
    removeDir(h.dataDir);
  }
});

test('the control plane down: counted as failed, never thrown, nothing blocks', async () => {
  const h = await startCollector({ report: { controlPlaneUrl: 'http://127.0.0.1:9', clusterToken: CLUSTER_TOKEN, intervalMs: 30_000 } });
  try {
    assert.equal(await h.collector.reporter!.sendOnce(), 'failed');
    assert.equal((await call(`${h.url}/v1/logs`, { body: otlpLogs([{ tsMs: T0, message: 'still ingesting' }]) })).status, 200);
    assert.match((await call(`${h.url}/metrics`)).text, /cove_collector_reports_total\{outcome="failed"\} 1/);
  } finally {
    await h.close();
    removeDir(h.dataDir);
  }
});

test('a report its own schema refuses is never sent (here: more nodes than the schema allows)', async () => {
  received.length = 0;
  const h = await startCollector(reportConfig(), { now: () => T0 });
  try {
    const many = { resourceMetrics: Array.from({ length: 10_002 }, (_, i) => otlpNodeMetrics(`n${i}`, { [NodeMetric.cpuCount]: 1 }, T0).resourceMetrics[0]!) };
    assert.equal((await call(`${h.url}/v1/metrics`, { body: many })).status, 200);
    assert.equal(await h.collector.reporter!.sendOnce(T0), 'invalid');
    assert.equal(received.length, 0);
    assert.match((await call(`${h.url}/metrics`)).text, /cove_collector_reports_total\{outcome="invalid"\} 1/);
  } finally {
    await h.close();
    removeDir(h.dataDir);
  }
});

test('the timer sends on its own every interval', async () => {
  received.length = 0;
  const h = await startCollector(reportConfig(50));
  try {
    await call(`${h.url}/v1/metrics`, { body: otlpNodeMetrics('node-t', nodeValues(), Date.now()) });
    assert.ok(await pollUntil(() => received.length >= 2, 10_000, 10), `got ${received.length} reports`);
    assert.ok(received.every((r) => r.parsed.success));
  } finally {
    await h.close();
    removeDir(h.dataDir);
  }
});
