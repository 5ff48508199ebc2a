// OTLP JSON in, E2B-shaped answers out, through the real server and a real SQLite file: every filter of every
// query route, team isolation, message capping, and 400s for malformed parameters.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { call, otlpLogs, otlpSandboxMetrics, removeDir, startCollector, type Harness } from './fixtures/harness.js';

const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);
let h: Harness;

before(async () => {
  h = await startCollector({}, { now: () => T0 + 3_600_000 });
  const levels = ['debug', 'info', 'warn', 'error'] as const;
  // sbx-1 of team-a: 20 entries, one a second, levels cycling, every 5th mentions "needle".
  const logs = Array.from({ length: 20 }, (_, i) => ({
    tsMs: T0 + i * 1000,
    level: levels[i % 4],
    message: i % 5 === 0 ? `process ${i} needle started` : `line ${i}`,
    fields: { pid: String(100 + i) },
  }));
  let r = await call(`${h.url}/v1/logs`, { body: otlpLogs(logs) });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, {});
  // The same sandbox id under another team, and another sandbox of team-a.
  r = await call(`${h.url}/v1/logs`, {
    body: otlpLogs([
      { team: 'team-b', sandbox: 'sbx-1', tsMs: T0 + 500, message: 'secret of team b needle' },
      { sandbox: 'sbx-2', tsMs: T0 + 500, message: 'other sandbox' },
    ]),
  });
  assert.equal(r.status, 200);
  // Build logs: template tpl-1, build bld-1, 150 entries.
  r = await call(`${h.url}/v1/logs`, {
    body: otlpLogs(Array.from({ length: 150 }, (_, i) => ({ template: 'tpl-1', build: 'bld-1', step: String(1 + (i % 3)), tsMs: T0 + i * 10, level: i === 149 ? 'error' : 'info', message: `step output ${i}` }))),
  });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, {});
  r = await call(`${h.url}/v1/logs`, { body: otlpLogs([{ team: 'team-b', template: 'tpl-1', build: 'bld-1', tsMs: T0, message: 'team b build line' }]) });
  assert.equal(r.status, 200);
  // Metrics: sbx-1 every 2 s for 60 s, one sample of team-b's sbx-1.
  r = await call(`${h.url}/v1/metrics`, {
    body: otlpSandboxMetrics(Array.from({ length: 30 }, (_, i) => ({ sandbox: 'sbx-1', tsMs: T0 + i * 2000, cpuPct: i + 0.5 }))),
  });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, {});
  r = await call(`${h.url}/v1/metrics`, { body: otlpSandboxMetrics([{ team: 'team-b', sandbox: 'sbx-1', tsMs: T0 + 90_000, cpuPct: 99 }, { sandbox: 'sbx-3', tsMs: T0, cpuPct: 7 }]) });
  assert.equal(r.status, 200);
});
after(async () => {
  await h.close();
  removeDir(h.dataDir);
});

const logsOf = (q: string) => call(`${h.url}/v1/sandboxes/sbx-1/logs?teamID=team-a&${q}`);

describe('sandbox logs', () => {
  test('all entries forward, E2B edge shape', async () => {
    const r = await logsOf('');
    assert.equal(r.status, 200);
    assert.equal(r.json.logEntries.length, 20);
    assert.equal(r.json.logs.length, 20);
    assert.deepEqual(r.json.logEntries[0], { timestamp: new Date(T0).toISOString(), level: 'debug', message: 'process 0 needle started', fields: { pid: '100' } });
    assert.equal(r.json.logs[1].timestamp, new Date(T0 + 1000).toISOString());
    // v1 lines are JSON records, as the CLI's `sandbox logs` parses them.
    assert.deepEqual(JSON.parse(r.json.logs[1].line), { ...r.json.logEntries[1].fields, logger: 'envd', level: r.json.logEntries[1].level, message: 'line 1' });
    assert.equal(r.headers['cache-control'], 'no-store');
  });
  test('start/end (ms), limit, direction', async () => {
    let r = await logsOf(`start=${T0 + 5000}&end=${T0 + 9000}`);
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), ['process 5 needle started', 'line 6', 'line 7', 'line 8', 'line 9']);
    r = await logsOf(`start=${T0 + 5000}&end=${T0 + 9000}&limit=2&direction=backward`);
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), ['line 9', 'line 8']);
    r = await logsOf('limit=3');
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), ['process 0 needle started', 'line 1', 'line 2']);
    r = await logsOf('limit=0');
    assert.equal(r.json.logEntries.length, 0);
  });
  test('level is that level and above', async () => {
    const r = await logsOf('level=warn');
    assert.equal(r.json.logEntries.length, 10);
    assert.ok(r.json.logEntries.every((e: { level: string }) => e.level === 'warn' || e.level === 'error'));
    const e = await logsOf('level=error');
    assert.equal(e.json.logEntries.length, 5);
  });
  test('search is a plain substring (no wildcard)', async () => {
    let r = await logsOf('search=needle');
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), [0, 5, 10, 15].map((i) => `process ${i} needle started`));
    r = await logsOf('search=%25');
    assert.equal(r.json.logEntries.length, 0);
    r = await logsOf('search=needle&level=error');
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), ['process 15 needle started']);
  });
  test('another team never sees these rows, and this team never sees theirs', async () => {
    const b = await call(`${h.url}/v1/sandboxes/sbx-1/logs?teamID=team-b&limit=1000`);
    assert.equal(b.status, 200);
    assert.deepEqual(b.json.logEntries.map((e: { message: string }) => e.message), ['secret of team b needle']);
    const a = await logsOf('search=team%20b');
    assert.equal(a.json.logEntries.length, 0);
    const c = await call(`${h.url}/v1/sandboxes/sbx-1/logs?teamID=team-c`);
    assert.deepEqual(c.json, { logs: [], logEntries: [] });
  });
  test('malformed parameters are 400 with a clear message; too large a limit is clamped', async () => {
    const cases: Array<[string, RegExp]> = [
      ['limit=abc', /limit must be an integer/],
      ['limit=-1', /limit must be at least 0/],
      ['start=yesterday', /start must be an integer/],
      [`start=${T0 + 10}&end=${T0}`, /start must not be after end/],
      ['direction=sideways', /direction must be forward or backward/],
      ['level=fatal', /level must be debug, info, warn or error/],
      [`search=${'x'.repeat(257)}`, /search must be at most 256/],
      ['limit=1&limit=2', /limit must be given once/],
    ];
    for (const [q, msg] of cases) {
      const r = await logsOf(q);
      assert.equal(r.status, 400, q);
      assert.equal(r.json.error, 'invalid_argument');
      assert.equal(r.json.code, 400);
      assert.match(r.json.message, msg, q);
    }
    const noTeam = await call(`${h.url}/v1/sandboxes/sbx-1/logs`);
    assert.equal(noTeam.status, 400);
    assert.match(noTeam.json.message, /teamID is required/);
    const badId = await call(`${h.url}/v1/sandboxes/sbx%20x/logs?teamID=team-a`);
    assert.equal(badId.status, 400);
    const clamped = await logsOf('limit=5000');
    assert.equal(clamped.status, 200);
    assert.equal(clamped.json.logEntries.length, 20);
  });
});

describe('build logs', () => {
  const buildLogs = (q: string) => call(`${h.url}/v1/templates/builds/bld-1/logs?teamID=team-a&templateID=tpl-1&${q}`);
  test('limit defaults to and is clamped at 100; offset pages; step kept', async () => {
    let r = await buildLogs('');
    assert.equal(r.status, 200);
    assert.equal(r.json.logEntries.length, 100);
    assert.deepEqual(r.json.logEntries[0], { timestamp: new Date(T0).toISOString(), level: 'info', message: 'step output 0', step: '1', fields: {} });
    r = await buildLogs('limit=1000&offset=100');
    assert.equal(r.json.logEntries.length, 50);
    assert.equal(r.json.logEntries[0].message, 'step output 100');
  });
  test('cursor (ms), direction, level', async () => {
    let r = await buildLogs(`cursor=${T0 + 1450}&limit=3`);
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), ['step output 145', 'step output 146', 'step output 147']);
    r = await buildLogs(`cursor=${T0 + 20}&direction=backward`);
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), ['step output 2', 'step output 1', 'step output 0']);
    r = await buildLogs('level=error');
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), ['step output 149']);
  });
  test('another team or template gets nothing; templateID and teamID are required', async () => {
    const b = await call(`${h.url}/v1/templates/builds/bld-1/logs?teamID=team-b&templateID=tpl-1`);
    assert.deepEqual(b.json.logEntries.map((e: { message: string }) => e.message), ['team b build line']);
    const t = await call(`${h.url}/v1/templates/builds/bld-1/logs?teamID=team-a&templateID=tpl-2`);
    assert.deepEqual(t.json, { logEntries: [] });
    const missing = await call(`${h.url}/v1/templates/builds/bld-1/logs?teamID=team-a`);
    assert.equal(missing.status, 400);
    assert.match(missing.json.message, /templateID is required/);
    const badCursor = await buildLogs('cursor=abc');
    assert.equal(badCursor.status, 400);
    assert.match(badCursor.json.message, /cursor must be an integer/);
  });
});

describe('sandbox metrics', () => {
  test('range in seconds, snake_case SandboxMetric', async () => {
    const s = T0 / 1000;
    const r = await call(`${h.url}/v1/sandboxes/sbx-1/metrics?teamID=team-a&start=${s + 10}&end=${s + 16}`);
    assert.equal(r.status, 200);
    assert.equal(r.json.length, 4);
    assert.deepEqual(r.json[0], {
      timestamp: new Date(T0 + 10_000).toISOString(),
      timestamp_unix: s + 10,
      cpu_used_pct: 5.5,
      cpu_count: 2,
      mem_total: 512 * 1024 ** 2,
      mem_used: 100 * 1024 ** 2,
      mem_cache: 0,
      disk_total: 1024 ** 3,
      disk_used: 200 * 1024 ** 2,
    });
    const all = await call(`${h.url}/v1/sandboxes/sbx-1/metrics?teamID=team-a`);
    assert.equal(all.json.length, 30);
    const other = await call(`${h.url}/v1/sandboxes/sbx-1/metrics?teamID=team-b`);
    assert.deepEqual(other.json.map((m: { cpu_used_pct: number }) => m.cpu_used_pct), [99]);
    const bad = await call(`${h.url}/v1/sandboxes/sbx-1/metrics?teamID=team-a&start=1.5`);
    assert.equal(bad.status, 400);
  });
  test('many sandboxes: latest sample of each, only the team\'s own, at most 100 ids', async () => {
    let r = await call(`${h.url}/v1/sandboxes/metrics?teamID=team-a&sandbox_ids=sbx-1,sbx-3,sbx-9`);
    assert.equal(r.status, 200);
    assert.deepEqual(Object.keys(r.json.sandboxes).sort(), ['sbx-1', 'sbx-3']);
    assert.equal(r.json.sandboxes['sbx-1'].cpu_used_pct, 29.5);
    r = await call(`${h.url}/v1/sandboxes/metrics?teamID=team-a&sandbox_ids=sbx-1&sandbox_ids=sbx-3`);
    assert.deepEqual(Object.keys(r.json.sandboxes).sort(), ['sbx-1', 'sbx-3']);
    r = await call(`${h.url}/v1/sandboxes/metrics?teamID=team-b&sandbox_ids=sbx-1,sbx-3`);
    assert.deepEqual(Object.keys(r.json.sandboxes), ['sbx-1']);
    assert.equal(r.json.sandboxes['sbx-1'].cpu_used_pct, 99);
    const ids = Array.from({ length: 101 }, (_, i) => `s${i}`).join(',');
    r = await call(`${h.url}/v1/sandboxes/metrics?teamID=team-a&sandbox_ids=${ids}`);
    assert.equal(r.status, 400);
    assert.match(r.json.message, /at most 100/);
    r = await call(`${h.url}/v1/sandboxes/metrics?teamID=team-a`);
    assert.equal(r.status, 400);
    assert.match(r.json.message, /sandbox_ids is required/);
  });
});
