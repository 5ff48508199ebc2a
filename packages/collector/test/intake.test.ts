// The OTLP/HTTP door: bearer token (none → 401, wrong → 403, constant-time), 4 MiB body bound (413), bad JSON and
// non-OTLP bodies (400), protobuf and compressed bodies (415), records without the attributes their kind needs
// (partialSuccess, never stored), message capping, and the Prometheus /metrics behind the same token.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Readable } from 'node:stream';
import { Attr } from '@cove/contracts/telemetry';
import { request } from 'undici';
import { MAX_BODY_BYTES } from '../src/index.js';
import { MAX_MESSAGE_BYTES } from '../src/otlp.js';
import { call, otlpLogs, otlpSandboxMetrics, removeDir, startCollector, TOKEN, type Harness } from './fixtures/harness.js';

const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);
let h: Harness;
before(async () => {
  h = await startCollector({}, { now: () => T0 + 60_000 });
});
after(async () => {
  await h.close();
  removeDir(h.dataDir);
});

const count = async (sandbox: string, team = 'team-a') => (await call(`${h.url}/v1/sandboxes/${sandbox}/logs?teamID=${team}`)).json.logEntries.length as number;

describe('authentication', () => {
  const routes = ['/v1/logs', '/v1/metrics', '/v1/sandboxes/sbx-1/logs?teamID=team-a', '/v1/sandboxes/metrics?teamID=t&sandbox_ids=a', '/metrics', '/nope'];
  test('no token → 401, wrong or malformed token → 403, on every route but /health', async () => {
    for (const r of routes) {
      const post = r === '/v1/logs' || r === '/v1/metrics';
      const body = post ? otlpLogs([{ sandbox: 'sbx-auth', tsMs: T0, message: 'x' }]) : undefined;
      const none = await call(`${h.url}${r}`, { token: null, body });
      assert.equal(none.status, 401, r);
      assert.equal(none.json.error, 'unauthenticated');
      for (const authorization of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, 'Bearer ', TOKEN, `Basic ${TOKEN}`]) {
        const wrong = await call(`${h.url}${r}`, { headers: { authorization }, body });
        assert.equal(wrong.status, 403, `${r} ${authorization}`);
        assert.equal(wrong.json.error, 'permission_denied');
      }
    }
    assert.equal(await count('sbx-auth'), 0, 'nothing unauthenticated was stored');
    const health = await call(`${h.url}/health`, { token: null });
    assert.equal(health.status, 200);
    assert.deepEqual(health.json, { status: 'ok' });
  });
});

describe('bodies', () => {
  test('a body over 4 MiB is 413 and nothing of it is stored', async () => {
    const big = otlpLogs([{ sandbox: 'sbx-big', tsMs: T0, message: 'y'.repeat(MAX_BODY_BYTES) }]);
    const r = await call(`${h.url}/v1/logs`, { body: big });
    assert.equal(r.status, 413);
    assert.equal(r.json.error, 'payload_too_large');
    // Chunked (no content-length): the bound holds while reading, too.
    const res = await request(`${h.url}/v1/logs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: Readable.from([Buffer.from(JSON.stringify(big))]),
    });
    assert.equal(res.statusCode, 413);
    await res.body.dump();
    assert.equal(await count('sbx-big'), 0);
  });
  test('bad JSON and bodies that are not OTLP are 400 with a message', async () => {
    const bad: Array<[string | Buffer, RegExp]> = [
      ['{"resourceLogs": [', /JSON/i],
      ['"a string"', /OTLP JSON object/],
      ['{"resourceLogs": {"not": "an array"}}', /resourceLogs/],
      ['{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "12x"}]}]}]}', /timeUnixNano/],
      ['{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": 99}]}]}]}', /severityNumber/],
    ];
    for (const [raw, msg] of bad) {
      const r = await call(`${h.url}/v1/logs`, { raw });
      assert.equal(r.status, 400, String(raw));
      assert.equal(r.json.error, 'invalid_argument');
      assert.match(r.json.message, msg);
    }
    const m = await call(`${h.url}/v1/metrics`, { raw: '{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": 5}]}]}]}' });
    assert.equal(m.status, 400);
  });
  test('protobuf and compressed bodies are 415 (OTLP JSON only)', async () => {
    let r = await call(`${h.url}/v1/logs`, { raw: Buffer.from([0x0a, 0x00]), headers: { 'content-type': 'application/x-protobuf' } });
    assert.equal(r.status, 415);
    assert.equal(r.json.error, 'unsupported_media_type');
    assert.match(r.json.message, /application\/json/);
    r = await call(`${h.url}/v1/metrics`, { raw: '{}', headers: { 'content-encoding': 'gzip' } });
    assert.equal(r.status, 415);
    r = await call(`${h.url}/v1/logs`, { raw: '{}', headers: { 'content-type': 'text/plain' } });
    assert.equal(r.status, 415);
  });
  test('an empty request is a success', async () => {
    for (const p of ['/v1/logs', '/v1/metrics']) {
      const r = await call(`${h.url}${p}`, { body: {} });
      assert.equal(r.status, 200);
      assert.deepEqual(r.json, {});
    }
  });
});

describe('records', () => {
  test('records without the attributes their kind needs are rejected in partialSuccess, the rest kept', async () => {
    const r = await call(`${h.url}/v1/logs`, {
      body: otlpLogs([
        { sandbox: 'sbx-p', tsMs: T0, message: 'kept' },
        { sandbox: null, tsMs: T0, message: 'no sandbox id' },
        { team: null, sandbox: 'sbx-p', tsMs: T0, message: 'no team id' },
        { kind: null, sandbox: 'sbx-p', tsMs: T0, message: 'no kind' },
        { team: 'team a; drop', sandbox: 'sbx-p', tsMs: T0, message: 'bad team id' },
        { kind: 'build', template: 'tpl', tsMs: T0, message: 'build without build id' },
      ]),
    });
    assert.equal(r.status, 200);
    assert.equal(r.json.partialSuccess.rejectedLogRecords, 5);
    assert.match(r.json.partialSuccess.errorMessage, new RegExp(Attr.sandboxId.replace('.', '\\.')));
    const kept = await call(`${h.url}/v1/sandboxes/sbx-p/logs?teamID=team-a`);
    assert.deepEqual(kept.json.logEntries.map((e: { message: string }) => e.message), ['kept']);

    const m = await call(`${h.url}/v1/metrics`, { body: otlpSandboxMetrics([{ sandbox: 'bad id!', tsMs: T0, cpuPct: 1 }]) });
    assert.equal(m.json.partialSuccess.rejectedDataPoints, 6);
  });
  test('a sandbox-sent message is capped at 16 KiB with a marker; fields are bounded', async () => {
    const fields: Record<string, string> = {};
    for (let i = 0; i < 100; i++) fields[`f${i}`] = 'v'.repeat(i === 0 ? 5000 : 1);
    const r = await call(`${h.url}/v1/logs`, { body: otlpLogs([{ sandbox: 'sbx-cap', tsMs: T0, message: 'é'.repeat(MAX_MESSAGE_BYTES), fields }]) });
    assert.equal(r.status, 200);
    const e = (await call(`${h.url}/v1/sandboxes/sbx-cap/logs?teamID=team-a`)).json.logEntries[0];
    assert.ok(Buffer.byteLength(e.message) < MAX_MESSAGE_BYTES + 64);
    assert.match(e.message, /…\[truncated 16384 bytes\]$/);
    assert.ok(!e.message.includes('\uFFFD'));
    assert.equal(Object.keys(e.fields).length, 64);
    assert.ok(e.fields.f0.length < 1100);
  });
  test('int64 given as numbers works too; a record without a time gets the arrival time', async () => {
    // A whole second in ns is exactly representable as a double (a multiple of 2^9 at this magnitude).
    const body = otlpLogs([{ sandbox: 'sbx-n', tsMs: T0 + 1000, message: 'numeric' }]);
    const rec = body.resourceLogs[0]!.scopeLogs[0]!.logRecords[0]! as Record<string, unknown>;
    rec.timeUnixNano = (T0 + 1000) * 1e6;
    const untimed = { ...rec, timeUnixNano: undefined, observedTimeUnixNano: undefined, body: { stringValue: 'untimed' } };
    body.resourceLogs[0]!.scopeLogs[0]!.logRecords.push(untimed as never);
    assert.equal((await call(`${h.url}/v1/logs`, { body })).status, 200);
    const got = (await call(`${h.url}/v1/sandboxes/sbx-n/logs?teamID=team-a`)).json.logEntries;
    assert.deepEqual(
      got.map((e: { timestamp: string; message: string }) => [e.timestamp, e.message]),
      [
        [new Date(T0 + 1000).toISOString(), 'numeric'],
        [new Date(T0 + 60_000).toISOString(), 'untimed'],
      ],
    );
  });
});

describe('prometheus', () => {
  test('/metrics counts ingested and rejected records, bytes and query latency', async () => {
    const r = await call(`${h.url}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'] as string, /text\/plain/);
    const value = (re: RegExp) => Number(re.exec(r.text)?.[1]);
    assert.ok(value(/cove_collector_records_ingested_total\{signal="logs"\} (\d+)/) >= 4);
    assert.equal(value(/cove_collector_records_rejected_total\{signal="logs"\} (\d+)/), 5);
    assert.equal(value(/cove_collector_records_rejected_total\{signal="metrics"\} (\d+)/), 6);
    assert.ok(value(/cove_collector_stored_bytes\{table="logs"\} (\d+)/) > MAX_MESSAGE_BYTES);
    assert.ok(value(/cove_collector_query_duration_seconds_count\{route="\/v1\/sandboxes\/:sandboxID\/logs"\} (\d+)/) >= 3);
  });
});
