// What a sandbox can put into the stream (its log text, fields, envd's clock) trying to reach another team's
// rows, outlive everyone's under retention, blow up memory, or make one answer enormous.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Attr } from '@cove/contracts/telemetry';
import { MAX_MESSAGE_BYTES } from '../src/otlp.js';
import { MAX_ANSWER_BYTES } from '../src/store.js';
import { call, otlpLogs, otlpSandboxMetrics, removeDir, startCollector, type Harness } from './fixtures/harness.js';

const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);
let now = T0;
let h: Harness;
before(async () => {
  h = await startCollector({ logRetentionBytes: 256 * 1024 * 1024 }, { now: () => now });
});
after(async () => {
  await h.close();
  removeDir(h.dataDir);
});

const entries = async (sandbox: string, team: string, q = '') => (await call(`${h.url}/v1/sandboxes/${sandbox}/logs?teamID=${team}&start=0${q}`)).json.logEntries as Array<{ timestamp: string; message: string; fields: Record<string, string> }>;

test('a tenant field spelled cove.team_id after the sender\'s stamp cannot refile the record under another team', async () => {
  const body = otlpLogs([{ team: 'team-a', sandbox: 'sbx-x', tsMs: T0, message: 'tenant text', fields: { [Attr.teamId]: 'team-victim', [Attr.sandboxId]: 'sbx-victim' } }]);
  const r = await call(`${h.url}/v1/logs`, { body });
  assert.equal(r.json.partialSuccess.rejectedLogRecords, 1);
  assert.match(r.json.partialSuccess.errorMessage, /appears twice/);
  assert.deepEqual(await entries('sbx-victim', 'team-victim'), []);
  assert.deepEqual(await entries('sbx-x', 'team-a'), []);
  // The same for sandbox metrics' data points.
  const m = otlpSandboxMetrics([{ sandbox: 'sbx-x', tsMs: T0, cpuPct: 1 }]);
  for (const metric of m.resourceMetrics[0]!.scopeMetrics[0]!.metrics) metric.gauge.dataPoints[0]!.attributes.push({ key: Attr.teamId, value: { stringValue: 'team-victim' } });
  const mr = await call(`${h.url}/v1/metrics`, { body: m });
  assert.equal(mr.json.partialSuccess.rejectedDataPoints, 6);
  assert.deepEqual((await call(`${h.url}/v1/sandboxes/sbx-x/metrics?teamID=team-victim`)).json, []);
  // A harmless repeat (same value) is fine, and other tenant fields are kept as fields.
  const ok = otlpLogs([{ team: 'team-a', sandbox: 'sbx-x', tsMs: T0, message: 'repeat', fields: { [Attr.teamId]: 'team-a', note: 'n' } }]);
  assert.deepEqual((await call(`${h.url}/v1/logs`, { body: ok })).json, {});
  assert.deepEqual((await entries('sbx-x', 'team-a')).map((e) => [e.message, e.fields]), [['repeat', { note: 'n' }]]);
});

test('a timestamp far in the future is filed at arrival, so oldest-first retention still reaches it', async () => {
  now = T0 + 10_000;
  const far = Date.UTC(2100, 0, 1);
  await call(`${h.url}/v1/logs`, { body: otlpLogs([{ sandbox: 'sbx-clock', tsMs: far, message: 'from the future' }, { sandbox: 'sbx-clock', tsMs: now + 60_000, message: 'slight skew' }]) });
  const got = await entries('sbx-clock', 'team-a');
  assert.deepEqual(
    got.map((e) => [e.message, e.timestamp]),
    [
      ['from the future', new Date(now).toISOString()],
      ['slight skew', new Date(now + 60_000).toISOString()],
    ],
  );
});

test('nested values cannot amplify: a body of deeply nested quote-heavy arrays is bounded and the server stays up', async () => {
  now = T0 + 20_000;
  const leaf = { stringValue: '"'.repeat(20_000) };
  let v: unknown = leaf;
  for (let d = 0; d < 6; d++) v = { arrayValue: { values: Array.from({ length: 2 }, () => v) } };
  const body = otlpLogs([{ sandbox: 'sbx-nest', tsMs: now, message: 'x' }]);
  (body.resourceLogs[0]!.scopeLogs[0]!.logRecords[0]! as { body: unknown }).body = v;
  const raw = JSON.stringify(body);
  assert.ok(raw.length < 4 * 1024 * 1024);
  const r = await call(`${h.url}/v1/logs`, { raw });
  assert.equal(r.status, 200);
  const [e] = await entries('sbx-nest', 'team-a');
  assert.ok(Buffer.byteLength(e!.message) <= MAX_MESSAGE_BYTES + 64);
  // Nesting far deeper than any renderer walks: refused or kept, never a crash.
  const deep = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + '{"arrayValue":{"values":['.repeat(50_000) + ']}}'.repeat(50_000) + '}]}]}]}';
  const d = await call(`${h.url}/v1/logs`, { raw: deep });
  assert.ok(d.status === 200 || d.status === 400, String(d.status));
  assert.equal((await call(`${h.url}/health`, { token: null })).status, 200);
});

test('one answer stays under its byte bound; the caller pages on by time', async () => {
  now = T0 + 30_000;
  const big = 'm'.repeat(MAX_MESSAGE_BYTES - 100);
  for (let b = 0; b < 5; b++) {
    const r = await call(`${h.url}/v1/logs`, { body: otlpLogs(Array.from({ length: 200 }, (_, i) => ({ sandbox: 'sbx-big', tsMs: T0 + b * 200 + i, message: `${b * 200 + i} ${big}` }))) });
    assert.equal(r.status, 200);
  }
  const first = await call(`${h.url}/v1/sandboxes/sbx-big/logs?teamID=team-a&start=0&limit=1000`);
  const n = first.json.logEntries.length as number;
  assert.ok(n > 100 && n < 1000, `first page ${n}`);
  assert.ok(first.text.length < 2.5 * MAX_ANSWER_BYTES, `answer ${first.text.length} bytes`);
  const lastTs = Date.parse(first.json.logEntries[n - 1].timestamp);
  const second = await call(`${h.url}/v1/sandboxes/sbx-big/logs?teamID=team-a&start=${lastTs + 1}&limit=1000`);
  assert.equal(Number(second.json.logEntries[0].message.split(' ')[0]), n);
});

test('search text is data, never SQL or a pattern', async () => {
  for (const s of ["'; DROP TABLE log_entries; --", '%', '_', '\\', '" OR 1=1 --']) {
    const r = await call(`${h.url}/v1/sandboxes/sbx-x/logs?teamID=team-a&start=0&search=${encodeURIComponent(s)}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.logEntries, []);
  }
  assert.equal((await entries('sbx-x', 'team-a')).length, 1);
});
