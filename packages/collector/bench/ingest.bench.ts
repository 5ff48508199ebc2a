// Collector benchmark: OTLP JSON log ingest (lines/s and the collector's CPU per 100k lines, 50 sandboxes
// printing) and the sandbox-metrics query latency over one hour of 2 s samples. The collector runs as its own
// process (dist/src/main.js, as `cove up` runs it) over a SQLite file in a temp dir; this process only loads it.
// Run: `node packages/collector/dist/bench/ingest.bench.js [lines=200000] [batch=200] [concurrency=4]`.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { otlpLogs, otlpSandboxMetrics, TOKEN } from '../test/fixtures/harness.js';

const lines = Number(process.argv[2] ?? 200_000);
const batch = Number(process.argv[3] ?? 200);
const concurrency = Number(process.argv[4] ?? 4);
const SANDBOXES = 50;

const port = await new Promise<number>((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => {
    const p = (s.address() as { port: number }).port;
    s.close(() => resolve(p));
  });
});
const dataDir = mkdtempSync(join(tmpdir(), 'cove-collector-bench-'));
const server = spawn(process.execPath, [fileURLToPath(new URL('../src/main.js', import.meta.url))], {
  env: { PATH: process.env.PATH ?? '', COVE_DATA_DIR: dataDir, COVE_COLLECTOR_TOKEN: TOKEN, COVE_COLLECTOR_PORT: String(port), COVE_LOG_LEVEL: 'warn' },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const url = `http://127.0.0.1:${port}`;
const pool = new Pool(url, { connections: concurrency });

async function post(path: string, body: unknown): Promise<void> {
  const res = await pool.request({ method: 'POST', path, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.body.text();
  if (res.statusCode !== 200 || text !== '{}') throw new Error(`${path}: ${res.statusCode} ${text}`);
}
async function get(path: string): Promise<number> {
  const t = performance.now();
  const res = await pool.request({ method: 'GET', path, headers: { authorization: `Bearer ${TOKEN}` } });
  await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode}`);
  return performance.now() - t;
}
/** utime + stime of the collector process, in seconds (/proc/<pid>/stat, clock ticks of 100 Hz). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

for (const deadline = Date.now() + 15_000; ; ) {
  const ok = await get('/health').then(
    () => true,
    () => false,
  );
  if (ok) break;
  if (Date.now() > deadline) throw new Error('collector did not start');
  await new Promise((r) => setTimeout(r, 50));
}

// Batches prepared up front: the figure is the collector's, not JSON building in the load generator.
const t0 = Date.now() - 3_600_000;
const batches = Array.from({ length: Math.ceil(lines / batch) }, (_, b) =>
  otlpLogs(
    Array.from({ length: batch }, (_, i) => {
      const n = b * batch + i;
      return { sandbox: `sbx-${n % SANDBOXES}`, tsMs: t0 + n, level: 'info' as const, message: `process ${n} started: /usr/bin/python3 -c "print(${n})"`, fields: { pid: String(1000 + (n % 30000)) } };
    }),
  ),
);
const cpu0 = cpuSeconds(server.pid!);
let next = 0;
const w0 = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < batches.length) await post('/v1/logs', batches[next++]);
  }),
);
const wallS = (performance.now() - w0) / 1000;
const cpu = cpuSeconds(server.pid!) - cpu0;
const perSec = (batches.length * batch) / wallS;
const cpuPer100k = (cpu / (batches.length * batch)) * 100_000;

// One hour of samples every 2 s for each of the 50 sandboxes, then the p50 of a whole-hour query.
const start = Math.floor(Date.now() / 1000) - 3600;
for (let s = 0; s < 1800; s += 100) {
  for (let sb = 0; sb < SANDBOXES; sb += 10) {
    const samples = [];
    for (let k = s; k < s + 100; k++) for (let j = sb; j < sb + 10; j++) samples.push({ sandbox: `sbx-${j}`, tsMs: (start + k * 2) * 1000, cpuPct: k % 100 });
    await post('/v1/metrics', otlpSandboxMetrics(samples));
  }
}
const q: number[] = [];
for (let i = 0; i < 200; i++) q.push(await get(`/v1/sandboxes/sbx-${i % SANDBOXES}/metrics?teamID=team-a&start=${start}&end=${start + 3600}`));
q.sort((a, b) => a - b);
const p50 = q[Math.floor(q.length / 2)]!;
const logQ: number[] = [];
for (let i = 0; i < 200; i++) logQ.push(await get(`/v1/sandboxes/sbx-${i % SANDBOXES}/logs?teamID=team-a&limit=1000&direction=backward&level=info`));
logQ.sort((a, b) => a - b);
const logP50 = logQ[Math.floor(logQ.length / 2)]!;

console.table([
  { figure: 'log ingest', value: Math.round(perSec), unit: 'lines/s' },
  { figure: 'collector CPU per 100k lines', value: +cpuPer100k.toFixed(2), unit: 's' },
  { figure: 'sandbox metrics, 1 h of samples, p50', value: +p50.toFixed(2), unit: 'ms' },
  { figure: 'sandbox logs, last 1000, p50', value: +logP50.toFixed(2), unit: 'ms' },
]);
const out = (name: string, value: number, unit: string, target?: string) => process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name, value, unit, ...(target ? { target } : {}) })}\n`);
out(`collector log ingest (${SANDBOXES} sandboxes, batch ${batch}, c=${concurrency})`, Math.round(perSec), 'lines/s');
out('collector CPU per 100k log lines', +cpuPer100k.toFixed(2), 's');
out('collector sandbox-metrics query p50 (1 h of 2 s samples)', +p50.toFixed(2), 'ms');
out('collector sandbox-logs query p50 (last 1000)', +logP50.toFixed(2), 'ms');

await pool.close();
server.kill('SIGTERM');
await new Promise((r) => server.on('exit', r));
rmSync(dataDir, { recursive: true, force: true });
