// Retention through the real server and SQLite file: the byte bound drops the oldest rows first (and counts
// them), the age bound drops what is older than the window, and a restart keeps data, byte accounting and
// node indexes.

import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { call, otlpLogs, otlpSandboxMetrics, removeDir, startCollector } from './fixtures/harness.js';

const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);
const messages = async (url: string, sandbox: string) =>
  (await call(`${url}/v1/sandboxes/${sandbox}/logs?teamID=team-a`)).json.logEntries.map((e: { message: string }) => e.message) as string[];
const promValue = async (url: string, re: RegExp) => Number(re.exec((await call(`${url}/metrics`)).text)?.[1] ?? 'NaN');

test('the log byte bound drops the oldest entries first, across sandboxes, and counts them', async () => {
  // ~1 KiB per row: a 64 KiB bound holds about 60 of them.
  const h = await startCollector({ logRetentionBytes: 64 * 1024 }, { now: () => T0 + 3_600_000 });
  try {
    const line = (i: number) => `${String(i).padStart(4, '0')} ${'x'.repeat(1000)}`;
    // Arrival order differs from time order: retention follows the records' time.
    for (let batch = 9; batch >= 0; batch--) {
      const logs = Array.from({ length: 10 }, (_, j) => ({ sandbox: batch % 2 ? 'sbx-odd' : 'sbx-even', tsMs: T0 + (batch * 10 + j) * 1000, message: line(batch * 10 + j) }));
      assert.equal((await call(`${h.url}/v1/logs`, { body: otlpLogs(logs) })).status, 200);
    }
    const kept = [...(await messages(h.url, 'sbx-odd')), ...(await messages(h.url, 'sbx-even'))].map((m) => Number(m.slice(0, 4))).sort((a, b) => a - b);
    assert.ok(kept.length > 40 && kept.length < 64, `kept ${kept.length}`);
    // What is left is exactly the newest ones: one contiguous run ending at 99.
    assert.equal(kept.at(-1), 99);
    assert.deepEqual(kept, Array.from({ length: kept.length }, (_, i) => 100 - kept.length + i));
    assert.ok(h.collector.store.bytes.logs <= 64 * 1024);
    assert.equal(await promValue(h.url, /cove_collector_retention_dropped_total\{table="logs",bound="bytes"\} (\d+)/), 100 - kept.length);
  } finally {
    await h.close();
    removeDir(h.dataDir);
  }
});

test('the metric byte bound drops the oldest samples first', async () => {
  const h = await startCollector({ metricRetentionBytes: 20 * 1024 }, { now: () => T0 + 3_600_000 });
  try {
    for (let b = 0; b < 5; b++) {
      const samples = Array.from({ length: 40 }, (_, i) => ({ sandbox: 'sbx-m', tsMs: T0 + (b * 40 + i) * 2000, cpuPct: b * 40 + i }));
      assert.equal((await call(`${h.url}/v1/metrics`, { body: otlpSandboxMetrics(samples) })).status, 200);
    }
    const got = (await call(`${h.url}/v1/sandboxes/sbx-m/metrics?teamID=team-a`)).json as Array<{ cpu_used_pct: number }>;
    assert.ok(got.length > 50 && got.length < 200, `kept ${got.length}`);
    assert.equal(got.at(-1)!.cpu_used_pct, 199);
    assert.equal(got[0]!.cpu_used_pct, 200 - got.length);
    assert.ok(h.collector.store.bytes.metrics <= 20 * 1024);
  } finally {
    await h.close();
    removeDir(h.dataDir);
  }
});

test('the age bound drops rows older than the window (at start and periodically)', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-collector-'));
  let now = T0;
  const h = await startCollector({ dataDir, retentionMs: 3_600_000 }, { now: () => now });
  try {
    await call(`${h.url}/v1/logs`, { body: otlpLogs([{ sandbox: 'sbx-age', tsMs: T0 - 10_000, message: 'old' }, { sandbox: 'sbx-age', tsMs: T0 + 1_800_000, message: 'new' }]) });
    await call(`${h.url}/v1/metrics`, { body: otlpSandboxMetrics([{ sandbox: 'sbx-age', tsMs: T0 - 10_000, cpuPct: 1 }, { sandbox: 'sbx-age', tsMs: T0 + 1_800_000, cpuPct: 2 }]) });
    assert.deepEqual(await messages(h.url, 'sbx-age'), ['old', 'new']);
    now = T0 + 3_600_000;
    const dropped = h.collector.store.expire(now);
    assert.deepEqual(dropped, { logs: 1, metrics: 1 });
    const all = await call(`${h.url}/v1/sandboxes/sbx-age/logs?teamID=team-a&start=0`);
    assert.deepEqual(all.json.logEntries.map((e: { message: string }) => e.message), ['new']);
  } finally {
    await h.close();
  }
  // A restart past the window expires at once.
  now = T0 + 2 * 3_600_000;
  const h2 = await startCollector({ dataDir, retentionMs: 3_600_000 }, { now: () => now });
  try {
    assert.deepEqual((await call(`${h2.url}/v1/sandboxes/sbx-age/logs?teamID=team-a&start=0`)).json.logEntries, []);
    assert.equal(h2.collector.store.bytes.logs, 0);
    assert.equal(h2.collector.store.bytes.metrics, 0);
  } finally {
    await h2.close();
    removeDir(dataDir);
  }
});

test('a restart keeps logs, samples and the byte accounting', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-collector-'));
  const now = () => T0 + 60_000;
  const h = await startCollector({ dataDir }, { now });
  await call(`${h.url}/v1/logs`, { body: otlpLogs([{ sandbox: 'sbx-r', tsMs: T0, message: 'before restart' }]) });
  await call(`${h.url}/v1/metrics`, { body: otlpSandboxMetrics([{ sandbox: 'sbx-r', tsMs: T0, cpuPct: 42 }]) });
  const bytes = h.collector.store.bytes;
  await h.close();
  const h2 = await startCollector({ dataDir }, { now });
  try {
    assert.deepEqual(await messages(h2.url, 'sbx-r'), ['before restart']);
    const m = (await call(`${h2.url}/v1/sandboxes/sbx-r/metrics?teamID=team-a`)).json;
    assert.equal(m[0].cpu_used_pct, 42);
    assert.deepEqual(h2.collector.store.bytes, bytes);
  } finally {
    await h2.close();
    removeDir(dataDir);
  }
});
