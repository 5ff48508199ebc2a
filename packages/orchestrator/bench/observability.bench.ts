// Observability benchmark (issue 11), every figure beside a baseline measured in the same run:
//  (a) log lines per second one node ingests while N sandboxes (default 50) flood their envd log, and the CPU the
//      orchestrator and the collector spend per 10k lines — baseline: the same sandboxes idle for the same time;
//  (b) sandbox-metrics query latency (p50, p95) over one hour of samples — baseline: the same query over one minute;
//  (c) Create latency (warm-pool hit, p50) with telemetry on — baseline: telemetry off, in alternating rounds,
//      with background sandboxes running in both (aim: overhead < 5%).
// The collector and the orchestrator run as their own processes (dist/src/main.js, as `cove up` runs them) on a
// private runtime instance; this process only drives them and reads their CPU from /proc.
//
// Run (root): node packages/orchestrator/dist/bench/observability.bench.js
// Knobs: COVE_BENCH_LOG_SANDBOXES (50), COVE_BENCH_WINDOW_S (30), COVE_BENCH_ROUNDS (4), COVE_BENCH_CREATES (16),
// COVE_BENCH_BACKGROUND (10), COVE_BENCH_PHASES (abc); COVE_TELEMETRY_* are passed to the node. Prints a table, `BENCH_JSON {...}` and `BENCH_RESULT` lines for `cove bench`.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import { Process } from '@cove/contracts/envd/process';
import { InfoService, SandboxService, SandboxSpecSchema } from '@cove/contracts/orchestrator';
import { ENVD_PORT } from '@cove/contracts/sandbox';
import { Attr, SandboxMetric } from '@cove/contracts/telemetry';
import { eventually } from '@cove/test-support/eventually';
import { freePort } from '@cove/test-support/free-port';
import { metricSample } from '@cove/test-support/prometheus-text';
import { pino } from 'pino';
import { request } from 'undici';
import { LinuxSandboxRuntime } from '../src/sandbox/linux-runtime.js';

const PKG = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const num = (name: string, def: number): number => {
  const v = Number(process.env[name]);
  return process.env[name] !== undefined && Number.isFinite(v) && v >= 0 ? v : def;
};
const LOG_SANDBOXES = num('COVE_BENCH_LOG_SANDBOXES', 50);
const WINDOW_S = num('COVE_BENCH_WINDOW_S', 30);
const ROUNDS = Math.max(1, num('COVE_BENCH_ROUNDS', 4));
const CREATES = Math.max(2, num('COVE_BENCH_CREATES', 16));
const BACKGROUND = num('COVE_BENCH_BACKGROUND', 10);
/** Which parts to run (a, b, c). */
const PHASES = process.env.COVE_BENCH_PHASES ?? 'abc';
const QUERY_SANDBOXES = 20;
const QUERIES = 200;

const INSTANCE = 'covobsb';
const VETH = 'cob-';
const SUBNET = '10.207.0.0/16';
const DATA_DIR = '/var/tmp/cove-bench/covobsb';
const TEMPLATE_CACHE = process.env.COVE_TEMPLATE_CACHE_DIR ?? '/var/tmp/cove-runtime-test/templates';
const NODE_TOKEN = 'bench-node-token-0123456789abcdef';
const COLLECTOR_TOKEN = 'bench-collector-token-0123456789';
const ACCESS = 'bench-access-token';

function runtime(): LinuxSandboxRuntime {
  return new LinuxSandboxRuntime({
    dataDir: DATA_DIR,
    templatesDir: TEMPLATE_CACHE,
    envdDir: join(PKG, '..', 'envd', 'dist', 'bundle'),
    nodeBinary: process.execPath,
    logger: pino({ level: 'error' }),
    instance: INSTANCE,
    vethPrefix: VETH,
    subnet: SUBNET,
  });
}

/** utime + stime of a process, in seconds (/proc/<pid>/stat, 100 Hz clock ticks). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
const r2 = (x: number) => Math.round(x * 100) / 100;
function summary(samples: number[]) {
  const s = [...samples].sort((a, b) => a - b);
  return { n: s.length, p50: r2(pct(s, 50)), p95: r2(pct(s, 95)), min: r2(s[0] ?? NaN), max: r2(s.at(-1) ?? NaN) };
}

// ---- the collector -------------------------------------------------------------------------------------------

interface CollectorProc {
  proc: ChildProcess;
  url: string;
  ingestedLogs(): Promise<number>;
  stop(): Promise<void>;
}

async function startCollector(): Promise<CollectorProc> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-obs-bench-'));
  const port = await freePort();
  const proc = spawn(process.execPath, [join(PKG, '..', 'collector', 'dist', 'src', 'main.js')], {
    env: { PATH: process.env.PATH ?? '', COVE_DATA_DIR: dataDir, COVE_COLLECTOR_TOKEN: COLLECTOR_TOKEN, COVE_COLLECTOR_PORT: String(port), COVE_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  await eventually(() => fetch(`${url}/health`).then((r) => r.ok, () => false), 20_000, 'the collector', 50);
  return {
    proc,
    url,
    async ingestedLogs() {
      const res = await request(`${url}/metrics`, { headers: { authorization: `Bearer ${COLLECTOR_TOKEN}` } });
      return metricSample(await res.body.text(), 'cove_collector_records_ingested_total', { signal: 'logs' }) ?? 0;
    },
    async stop() {
      proc.kill('SIGTERM');
      await once(proc, 'exit');
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// ---- the node ------------------------------------------------------------------------------------------------

interface NodeProc {
  proc: ChildProcess;
  sandboxes: ReturnType<typeof createClient<typeof SandboxService>>;
  info: ReturnType<typeof createClient<typeof InfoService>>;
  proxyUrl: string;
  metricsText(): Promise<string>;
  stop(): Promise<void>;
}

async function startNode(collectorUrl: string | undefined, pool: number, maxSandboxes: number): Promise<NodeProc> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    COVE_NODE_ID: 'obs-bench-node',
    COVE_NODE_TOKEN: NODE_TOKEN,
    COVE_ARTIFACT_KEY: 'bench-artifact-key-0123456789abcdef0123456789',
    COVE_ENVD_BUNDLE: join(PKG, '..', 'envd', 'dist', 'bundle'),
    COVE_ORCH_HOST: '127.0.0.1',
    COVE_ORCH_RPC_PORT: '0',
    COVE_ORCH_PROXY_PORT: '0',
    COVE_DATA_DIR: DATA_DIR,
    COVE_TEMPLATE_CACHE_DIR: TEMPLATE_CACHE,
    COVE_RUNTIME_INSTANCE: INSTANCE,
    COVE_VETH_PREFIX: VETH,
    COVE_SANDBOX_SUBNET: SUBNET,
    COVE_WARM_POOL: `base=${pool}`,
    COVE_MAX_SANDBOXES: String(maxSandboxes),
    COVE_CPU_OVERCOMMIT: '1000',
    COVE_LOG_LEVEL: 'info',
    ...(collectorUrl ? { COVE_COLLECTOR_URL: collectorUrl, COVE_COLLECTOR_TOKEN: COLLECTOR_TOKEN } : {}),
  };
  // The node's telemetry knobs given to the bench reach the node (e.g. a longer pull interval).
  for (const [k, v] of Object.entries(process.env)) if (collectorUrl && k.startsWith('COVE_TELEMETRY_') && v !== undefined) env[k] = v;
  const proc = spawn(process.execPath, [join(PKG, 'dist', 'src', 'main.js')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(proc, 'exit');
  const lines = createInterface({ input: proc.stdout! });
  const ports = await new Promise<{ rpcPort: number; proxyPort: number }>((resolve, reject) => {
    lines.on('line', (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; rpcPort?: number; proxyPort?: number };
        if (rec.msg === 'orchestrator listening') resolve({ rpcPort: rec.rpcPort!, proxyPort: rec.proxyPort! });
      } catch {
        /* not JSON */
      }
    });
    void exited.then(() => reject(new Error('orchestrator exited before listening')));
  });
  const auth: Interceptor = (next) => (req) => {
    req.header.set('authorization', `Bearer ${NODE_TOKEN}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${ports.rpcPort}`, interceptors: [auth] });
  const proxyUrl = `http://127.0.0.1:${ports.proxyPort}`;
  const sandboxes = createClient(SandboxService, transport);
  return {
    proc,
    sandboxes,
    info: createClient(InfoService, transport),
    proxyUrl,
    async metricsText() {
      const res = await request(`${proxyUrl}/metrics`, { headers: { authorization: `Bearer ${NODE_TOKEN}` } });
      return res.body.text();
    },
    async stop() {
      // SIGTERM leaves sandboxes running (they are re-adopted): delete them first.
      for (const s of (await sandboxes.list({})).sandboxes) await sandboxes.delete({ sandboxId: s.sandboxId }).catch(() => undefined);
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

const spec = (sandboxId: string) =>
  create(SandboxSpecSchema, {
    sandboxId,
    teamId: 'bench-team',
    templateId: 'base',
    vcpu: 1,
    memoryMb: 256,
    diskMb: 1024,
    endTime: timestampFromMs(Date.now() + 3_600_000),
    envdAccessToken: ACCESS,
  });

async function runIn(proxyUrl: string, sandboxId: string, script: string): Promise<string> {
  const headers: Interceptor = (next) => (req) => {
    req.header.set('cove-node-token', NODE_TOKEN);
    req.header.set('e2b-sandbox-id', sandboxId);
    req.header.set('e2b-sandbox-port', String(ENVD_PORT));
    req.header.set('x-access-token', ACCESS);
    return next(req);
  };
  const client = createClient(Process, createConnectTransport({ baseUrl: proxyUrl, httpVersion: '1.1', interceptors: [headers] }));
  let out = '';
  for await (const res of client.start({ process: { cmd: '/bin/bash', args: ['-c', script], envs: {} } })) {
    const ev = res.event?.event;
    if (ev?.case === 'data' && ev.value.output.case === 'stdout') out += Buffer.from(ev.value.output.value).toString();
  }
  return out;
}

// A tenant flooding its own sandbox log: 100 pipelined requests envd refuses (no access token → one `warn`
// record each) per connection, as fast as the sandbox's one vCPU allows.
const FLOOD = `cat > /tmp/flood.sh <<'EOF'
req=$(for i in $(seq 99); do printf 'GET /envs HTTP/1.1\\r\\nHost: envd\\r\\n\\r\\n'; done)
while :; do
  exec 3<>/dev/tcp/127.0.0.1/${ENVD_PORT} || exit 1
  printf '%s' "$req" >&3
  printf 'GET /envs HTTP/1.1\\r\\nHost: envd\\r\\nConnection: close\\r\\n\\r\\n' >&3
  cat <&3 >/dev/null
  exec 3<&-
done
EOF
nohup bash /tmp/flood.sh >/dev/null 2>&1 &
echo started`;

// ---- (a) ingest ----------------------------------------------------------------------------------------------

async function ingest(collector: CollectorProc) {
  const node = await startNode(collector.url, 0, LOG_SANDBOXES + 2);
  try {
    let held = 0;
    let stoppedBy = 'requested count';
    for (; held < LOG_SANDBOXES; held++) {
      try {
        await node.sandboxes.create({ sandbox: spec(`flood${held}`) });
      } catch (err) {
        stoppedBy = ConnectError.from(err).code === Code.ResourceExhausted ? 'node full' : `error: ${ConnectError.from(err).message}`;
        break;
      }
    }
    const window = async () => {
      const n0 = await collector.ingestedLogs();
      const c0 = cpuSeconds(node.proc.pid!);
      const k0 = cpuSeconds(collector.proc.pid!);
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, WINDOW_S * 1000)); // the measurement window itself
      const seconds = (performance.now() - t0) / 1000;
      return { lines: (await collector.ingestedLogs()) - n0, seconds, nodeCpu: cpuSeconds(node.proc.pid!) - c0, collectorCpu: cpuSeconds(collector.proc.pid!) - k0 };
    };
    // Idle first (creation's own records have gone out once the count stops moving), then flooding.
    let last = -1;
    await eventually(
      async () => {
        const now = await collector.ingestedLogs();
        const settled = now === last;
        last = now;
        if (!settled) await new Promise((r) => setTimeout(r, 2500));
        return settled;
      },
      120_000,
      'the creation records to settle',
      50,
    );
    const idle = await window();
    for (let i = 0; i < held; i++) await runIn(node.proxyUrl, `flood${i}`, FLOOD);
    const before = await collector.ingestedLogs();
    await eventually(async () => (await collector.ingestedLogs()) > before + 1000, 60_000, 'flood records at the collector', 50);
    // Steady state: one more pull round goes by before the window opens.
    await new Promise((r) => setTimeout(r, 5000));
    const busy = await window();
    const text = await node.metricsText();
    const dropped = metricSample(text, 'cove_telemetry_dropped_total', { signal: 'logs' }) ?? 0;
    return { sandboxes: held, stoppedBy, idle, busy, senderDroppedLogs: dropped };
  } finally {
    await node.stop();
  }
}

// ---- (b) metrics query ---------------------------------------------------------------------------------------

async function metricsQuery(collector: CollectorProc) {
  const end = Date.now() - 1000;
  const start = end - 3_600_000;
  const kv = (key: string, value: string) => ({ key, value: { stringValue: value } });
  for (let s = 0; s < QUERY_SANDBOXES; s++) {
    const ts = Array.from({ length: 720 }, (_, i) => start + i * 5000);
    const gauge = (name: string, v: (i: number) => number) => ({
      name,
      gauge: { dataPoints: ts.map((t, i) => ({ attributes: [kv(Attr.teamId, 'bench-team'), kv(Attr.sandboxId, `q${s}`)], timeUnixNano: `${BigInt(t) * 1_000_000n}`, asDouble: v(i) })) },
    });
    const body = {
      resourceMetrics: [
        {
          resource: { attributes: [kv(Attr.serviceName, 'cove-orchestrator'), kv(Attr.serviceInstanceId, 'obs-bench-seed')] },
          scopeMetrics: [
            {
              scope: { name: 'cove' },
              metrics: [
                gauge(SandboxMetric.cpuUsedPct, (i) => (i * 7) % 100),
                gauge(SandboxMetric.cpuCount, () => 1),
                gauge(SandboxMetric.memoryUsed, (i) => 100e6 + i * 1000),
                gauge(SandboxMetric.memoryTotal, () => 256 * 2 ** 20),
                gauge(SandboxMetric.diskUsed, (i) => 200e6 + i * 1000),
                gauge(SandboxMetric.diskTotal, () => 2 ** 30),
              ],
            },
          ],
        },
      ],
    };
    const res = await request(`${collector.url}/v1/metrics`, { method: 'POST', headers: { authorization: `Bearer ${COLLECTOR_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await res.body.text();
    if (res.statusCode !== 200 || text.includes('rejected')) throw new Error(`seeding metrics: ${res.statusCode} ${text}`);
  }
  const query = async (s: number, fromMs: number): Promise<{ ms: number; n: number }> => {
    const t = performance.now();
    const res = await request(`${collector.url}/v1/sandboxes/q${s}/metrics?teamID=bench-team&start=${Math.floor(fromMs / 1000)}&end=${Math.floor(end / 1000)}`, {
      headers: { authorization: `Bearer ${COLLECTOR_TOKEN}` },
    });
    const body = (await res.body.json()) as unknown[];
    const ms = performance.now() - t;
    if (res.statusCode !== 200) throw new Error(`metrics query: ${res.statusCode}`);
    return { ms, n: body.length };
  };
  for (let i = 0; i < 20; i++) await query(i % QUERY_SANDBOXES, start); // warm-up
  const hour: number[] = [];
  const minute: number[] = [];
  let hourSamples = 0;
  let minuteSamples = 0;
  for (let i = 0; i < QUERIES; i++) {
    const h = await query(i % QUERY_SANDBOXES, start);
    hour.push(h.ms);
    hourSamples = h.n;
    const m = await query(i % QUERY_SANDBOXES, end - 60_000);
    minute.push(m.ms);
    minuteSamples = m.n;
  }
  return { hour: summary(hour), minute: summary(minute), hourSamples, minuteSamples };
}

// ---- (c) create latency with telemetry on and off ------------------------------------------------------------

async function createOverhead(collector: CollectorProc) {
  const on: number[] = [];
  const off: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const telemetry of round % 2 === 0 ? [false, true] : [true, false]) {
      const node = await startNode(telemetry ? collector.url : undefined, 1, BACKGROUND + 4);
      try {
        for (let i = 0; i < BACKGROUND; i++) await node.sandboxes.create({ sandbox: spec(`bg${i}`) });
        const ready = async () => ((await node.info.info({})).warmPools[0]?.ready ?? 0) >= 1;
        for (let i = 0; i < CREATES; i++) {
          await eventually(ready, 120_000, 'the warm slot', 50);
          const t = performance.now();
          const res = await node.sandboxes.create({ sandbox: spec(`c${i}`) });
          const ms = performance.now() - t;
          if (!res.warmPoolHit) throw new Error('a create missed the warm pool; the figure would mix hits and misses');
          // The first create of a block warms the process's code paths: not steady state.
          if (i > 0) (telemetry ? on : off).push(ms);
          await node.sandboxes.delete({ sandboxId: `c${i}` });
        }
      } finally {
        await node.stop();
      }
    }
  }
  return { on: summary(on), off: summary(off) };
}

async function main(): Promise<void> {
  await runtime().teardownHost().catch(() => undefined);
  await rm(DATA_DIR, { recursive: true, force: true });
  const collector = await startCollector();
  try {
    type Row = { name: string; value: number; unit: string; baseline: number; baselineLabel: string; target?: string };
    const rows: Row[] = [];
    const result: Record<string, unknown> = {};
    if (PHASES.includes('a')) {
      console.log(`(a) ingest: ${LOG_SANDBOXES} sandboxes flooding their envd log, windows of ${WINDOW_S} s`);
      const a = await ingest(collector);
      await runtime().teardownHost().catch(() => undefined);
      await rm(DATA_DIR, { recursive: true, force: true });
      const rate = (w: { lines: number; seconds: number }) => r2(w.lines / w.seconds);
      const per10k = (cpu: number, lines: number) => (lines > 0 ? r2((cpu / lines) * 10_000) : NaN);
      result.ingest = a;
      rows.push(
        { name: `log lines/s one node ingests (${a.sandboxes} sandboxes flooding)`, value: rate(a.busy), unit: 'lines/s', baseline: rate(a.idle), baselineLabel: 'same sandboxes idle' },
        { name: 'orchestrator CPU s per 10k lines', value: per10k(a.busy.nodeCpu, a.busy.lines), unit: 's', baseline: r2(a.idle.nodeCpu), baselineLabel: `CPU s idle over ${WINDOW_S} s` },
        { name: 'collector CPU s per 10k lines', value: per10k(a.busy.collectorCpu, a.busy.lines), unit: 's', baseline: r2(a.idle.collectorCpu), baselineLabel: `CPU s idle over ${WINDOW_S} s` },
      );
      console.log(`sandboxes flooding: ${a.sandboxes} (${a.stoppedBy}); records the node's sender dropped: ${a.senderDroppedLogs}`);
    }
    if (PHASES.includes('b')) {
      console.log('(b) sandbox-metrics query over 1 h of 5 s samples');
      const b = await metricsQuery(collector);
      result.metricsQuery = b;
      rows.push(
        { name: `sandbox metrics query, 1 h (${b.hourSamples} samples) p50`, value: b.hour.p50, unit: 'ms', baseline: b.minute.p50, baselineLabel: `1 min (${b.minuteSamples} samples) p50` },
        { name: 'sandbox metrics query, 1 h p95', value: b.hour.p95, unit: 'ms', baseline: b.minute.p95, baselineLabel: '1 min p95' },
      );
    }
    if (PHASES.includes('c')) {
      console.log(`(c) create latency, telemetry on vs off: ${ROUNDS} rounds × ${CREATES} warm-pool hits per mode, ${BACKGROUND} sandboxes running`);
      const c = await createOverhead(collector);
      const overheadPct = r2(((c.on.p50 - c.off.p50) / c.off.p50) * 100);
      result.create = c;
      result.createOverheadPct = overheadPct;
      rows.push(
        { name: 'create p50 (warm hit), telemetry on', value: c.on.p50, unit: 'ms', baseline: c.off.p50, baselineLabel: 'telemetry off p50' },
        { name: 'create p95 (warm hit), telemetry on', value: c.on.p95, unit: 'ms', baseline: c.off.p95, baselineLabel: 'telemetry off p95' },
        { name: 'create p50 overhead of telemetry', value: overheadPct, unit: '%', baseline: 0, baselineLabel: 'telemetry off', target: '< 5' },
      );
    }
    const w = Math.max(...rows.map((r) => r.name.length));
    console.log(`${'figure'.padEnd(w)}  ${'value'.padStart(10)}  ${'baseline'.padStart(10)}  unit     baseline is`);
    for (const r of rows) console.log(`${r.name.padEnd(w)}  ${String(r.value).padStart(10)}  ${String(r.baseline).padStart(10)}  ${r.unit.padEnd(7)}  ${r.baselineLabel}`);
    console.log(`BENCH_JSON ${JSON.stringify(result)}`);
    for (const r of rows) console.log(`BENCH_RESULT ${JSON.stringify(r)}`);
  } finally {
    await collector.stop();
    await runtime().teardownHost().catch(() => undefined);
    await rm(DATA_DIR, { recursive: true, force: true });
  }
}

await main();
