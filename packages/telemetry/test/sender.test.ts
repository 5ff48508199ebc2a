import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Attr, NodeMetric, SEVERITY_OF_LEVEL, TELEMETRY_DROPPED_METRIC } from '@cove/contracts/telemetry';
import { OtlpSender, componentRegistry, serveMetrics } from '../src/index.js';
import { startOtlpStandIn, type OtlpStandIn } from '../src/testing.js';
import { eventually } from '@cove/test-support/eventually';

describe('OTLP sender', () => {
  let otlp: OtlpStandIn;
  before(async () => (otlp = await startOtlpStandIn()));
  after(() => otlp.close());

  test('posts log records and gauges as OTLP JSON with the bearer token and resource', async () => {
    const s = new OtlpSender({ url: otlp.url, token: 'collector-token', serviceName: 'cove-test', instanceId: 'n1', metricIntervalMs: 200 });
    s.meter.createObservableGauge('cove.test.gauge').addCallback((r) => r.observe(42, { [Attr.sandboxId]: 'sbx1' }));
    s.emit({ kind: 'sandbox', level: 'warn', message: 'hello', ids: { [Attr.sandboxId]: 'sbx1', [Attr.teamId]: 't1' }, fields: { [Attr.sandboxId]: 'forged', exitCode: 3 } });
    await s.flush();
    const rec = await eventually(() => otlp.logs().find((l) => l.body === 'hello'), 15_000, 'the log record', 50);
    assert.equal(rec.severityNumber, SEVERITY_OF_LEVEL.warn);
    assert.equal(rec.attributes[Attr.logKind], 'sandbox');
    assert.equal(rec.attributes[Attr.sandboxId], 'sbx1', 'a field cannot override an identity attribute');
    assert.equal(rec.attributes.exitCode, 3);
    assert.equal(rec.resource[Attr.serviceName], 'cove-test');
    assert.equal(rec.resource[Attr.serviceInstanceId], 'n1');
    assert.ok(otlp.posts.every((p) => p.authorization === 'Bearer collector-token'));
    const point = await eventually(() => otlp.points().find((p) => p.name === 'cove.test.gauge'), 15_000, 'the gauge', 50);
    assert.equal(point.value, 42);
    assert.deepEqual(s.dropped(), { logs: 0, metrics: 0 });
    await s.shutdown();
  });

  test('what the sender drops is sent as the cumulative cove.telemetry.dropped.total (edges and nodes alike)', async () => {
    const s = new OtlpSender({ url: otlp.url, serviceName: 'cove-edge', instanceId: 'e1', maxQueue: 1, metricIntervalMs: 100 });
    // The queue holds one record: of five emitted at once, four are dropped (the collector is up).
    let accepted = 0;
    for (let i = 0; i < 5; i++) if (s.emit({ kind: 'component', level: 'info', message: `drop-${i}`, ids: {} })) accepted++;
    assert.equal(accepted, 1);
    const point = await eventually(
      () => otlp.points().find((p) => p.name === NodeMetric.telemetryDroppedTotal && p.resource[Attr.serviceInstanceId] === 'e1' && p.value === 4),
      15_000,
      'the dropped total',
      50,
    );
    assert.equal(point.resource[Attr.serviceName], 'cove-edge');
    await s.shutdown();
  });

  test('a collector that is down costs counted records, never a blocked emit; the queue is bounded', async () => {
    const dead = createServer();
    dead.listen(0, '127.0.0.1');
    await once(dead, 'listening');
    const port = (dead.address() as AddressInfo).port;
    await new Promise<void>((r) => dead.close(() => r()));
    const s = new OtlpSender({ url: `http://127.0.0.1:${port}`, serviceName: 'cove-test', instanceId: 'n1', maxQueue: 100, timeoutMs: 500, metricIntervalMs: 100 });
    s.meter.createObservableGauge('cove.test.gauge').addCallback((r) => r.observe(1));
    const t0 = performance.now();
    let accepted = 0;
    for (let i = 0; i < 10_000; i++) if (s.emit({ kind: 'sandbox', level: 'info', message: `m${i}`, ids: {} })) accepted++;
    const took = performance.now() - t0;
    assert.ok(took < 2000, `10000 emits took ${took} ms`);
    assert.ok(accepted <= 100, `at most the queue is accepted (${accepted})`);
    await eventually(() => s.dropped().logs >= 10_000 - accepted + 1 && s.dropped(), 15_000, 'failed exports counted', 50);
    await eventually(() => s.dropped().metrics > 0, 15_000, 'failed metric exports counted', 50);
    const registry = componentRegistry('test', () => s.dropped());
    const text = await registry.metrics();
    assert.match(text, new RegExp(`${TELEMETRY_DROPPED_METRIC}\\{signal="logs",component="test"\\} \\d+`));
    await s.shutdown();
  });
});

describe('Prometheus /metrics', () => {
  test('needs the bearer token', async () => {
    const registry = componentRegistry('test', () => ({ logs: 7, metrics: 0 }));
    const server = createServer((req, res) => {
      if (!serveMetrics(registry, 'the-token-0123456789', req, res)) res.writeHead(404).end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
    try {
      assert.equal((await fetch(url)).status, 401);
      assert.equal((await fetch(url, { headers: { authorization: 'Bearer wrong' } })).status, 403);
      assert.equal((await fetch(url, { method: 'POST', headers: { authorization: 'Bearer the-token-0123456789' } })).status, 405);
      const ok = await fetch(url, { headers: { authorization: 'Bearer the-token-0123456789' } });
      assert.equal(ok.status, 200);
      assert.match(await ok.text(), /cove_telemetry_dropped_total\{[^}]*signal="logs"[^}]*\} 7/);
      assert.equal((await fetch(url.replace('/metrics', '/other'))).status, 404);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
