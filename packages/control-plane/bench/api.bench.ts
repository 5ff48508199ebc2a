// Control-plane API benchmark: create / get / list / kill latency and throughput through real HTTP and the
// control link (gRPC over HTTP/2 to the cluster fixture). Server and load generator run in separate processes.
// Run: `node packages/control-plane/dist/bench/api.bench.js [sandboxes=400] [concurrency=16]`.
// BENCH_SERVER_NODE_ARGS (space-separated) go to the server's node, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`
// (NODE_OPTIONS refuses --cpu-prof); BENCH_OPS=create runs only the named phases (comma-separated).
// Steady state: one uncounted round of every phase first (the server's JIT is cold in it: its creates/s were ~0.65x
// the later rounds'), then BENCH_ROUNDS (3) counted rounds; each figure is the median of the rounds, with the
// min and max in the JSON, and the first round's creates/s beside the median as its baseline.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';

const total = Number(process.argv[2] ?? 400);
const concurrency = Number(process.argv[3] ?? 16);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);

const serverArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
const ops = new Set((process.env.BENCH_OPS ?? 'create,get,list,timeout,kill').split(','));
const server = spawn(process.execPath, [...serverArgs, fileURLToPath(new URL('./server.js', import.meta.url))], { stdio: ['pipe', 'pipe', 'inherit'] });
const serverLines = createInterface({ input: server.stdout! })[Symbol.asyncIterator]();
const first = await serverLines.next();
const { url, key } = JSON.parse(String(first.value)) as { url: string; key: string };

/** The server process's CPU time so far (user + system), in ms. */
async function serverCpuMs(): Promise<number> {
  server.stdin!.write('cpu\n');
  return (JSON.parse(String((await serverLines.next()).value)) as { cpuMs: number }).cpuMs;
}
const pool = new Pool(url, { connections: concurrency });

async function req(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await pool.request({
    method: method as 'GET',
    path,
    headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.body.text();
  return { status: res.statusCode, json: text ? JSON.parse(text) : undefined };
}

function stats(name: string, samples: number[], wallMs: number, cpuMs: number) {
  const s = [...samples].sort((a, b) => a - b);
  const p = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0;
  return {
    op: name,
    n: s.length,
    p50: +p(0.5).toFixed(2),
    p90: +p(0.9).toFixed(2),
    p99: +p(0.99).toFixed(2),
    max: +(s[s.length - 1] ?? 0).toFixed(2),
    perSec: +((s.length / wallMs) * 1000).toFixed(0),
    serverCpuMsPerOp: +(cpuMs / s.length).toFixed(3),
  };
}

async function phase(name: string, n: number, fn: (i: number) => Promise<void>) {
  const samples: number[] = [];
  let next = 0;
  const cpu0 = await serverCpuMs();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        const t = performance.now();
        await fn(i);
        samples.push(performance.now() - t);
      }
    }),
  );
  const wall = performance.now() - t0;
  return stats(name, samples, wall, (await serverCpuMs()) - cpu0);
}

type Phase = Awaited<ReturnType<typeof phase>>;

/** One round: every phase in order, on `total` sandboxes it creates (and, with `kill`, ends). */
async function round(): Promise<Phase[]> {
  const ids: string[] = [];
  const out: Phase[] = [];
  out.push(
    await phase('create', total, async (i) => {
      const r = await req('POST', '/v2/sandboxes', { templateID: 'base', timeout: 600, metadata: { i: String(i) } });
      if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.json)}`);
      ids.push(r.json.sandboxID);
    }),
  );
  if (ops.has('get')) out.push(await phase('get', total, async (i) => void (await req('GET', `/sandboxes/${ids[i]}`))));
  if (ops.has('list')) out.push(await phase('list(100)', Math.max(20, total / 10), async () => void (await req('GET', '/v2/sandboxes?limit=100'))));
  if (ops.has('timeout')) out.push(await phase('timeout', total, async (i) => void (await req('POST', `/sandboxes/${ids[i]}/timeout`, { timeout: 300 }))));
  if (ops.has('kill')) out.push(await phase('kill', total, async (i) => void (await req('DELETE', `/sandboxes/${ids[i]}`))));
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const warm = await round();
const counted: Phase[][] = [];
for (let r = 0; r < rounds; r++) counted.push(await round());
// Per phase: each figure's spread over the counted rounds, and its median as the figure.
const results = warm.map((f, i) => {
  const each = counted.map((c) => c[i]!);
  const spread = (k: 'p50' | 'perSec' | 'serverCpuMsPerOp') => {
    const xs = each.map((e) => e[k]);
    return { min: Math.min(...xs), median: median(xs), max: Math.max(...xs) };
  };
  const spreads = { p50: spread('p50'), perSec: spread('perSec'), serverCpuMsPerOp: spread('serverCpuMsPerOp') };
  return { op: f.op, p50: spreads.p50.median, perSec: spreads.perSec.median, serverCpuMsPerOp: spreads.serverCpuMsPerOp.median, rounds: spreads, firstRound: f };
});

const mem = process.memoryUsage();
console.table(results.map(({ rounds: _r, firstRound: _f, ...r }) => r));
process.stdout.write(`${JSON.stringify({ bench: 'control-plane-api', total, concurrency, countedRounds: rounds, results, clientRssMb: Math.round(mem.rss / 2 ** 20) })}\n`);
for (const r of results) {
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name: `control-plane API ${r.op} p50 (c=${concurrency})`, value: r.p50, unit: 'ms' })}\n`);
}
const create = results.find((r) => r.op === 'create')!;
process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name: `control-plane API creates/s (c=${concurrency})`, value: create.perSec, unit: '1/s', target: '>= 500', baseline: create.firstRound.perSec, baselineLabel: 'the uncounted first round, cold JIT' })}\n`);
await pool.close();
server.stdin!.end();
