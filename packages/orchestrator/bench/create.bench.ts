// Create latency (warm-pool hits vs misses), Delete latency, idle-sandbox memory (PSS) and how many idle
// sandboxes one node holds. The orchestrator runs as its own process (node dist/src/main.js) on a private
// runtime instance; this process only drives it over gRPC, as the control plane would.
//
// Run (root): node packages/orchestrator/dist/bench/create.bench.js
// Knobs: COVE_BENCH_HITS (10), COVE_BENCH_MISSES (5), COVE_BENCH_POOL (3), COVE_BENCH_MAX_IDLE (30).
// Prints a table, then one line of JSON prefixed "BENCH_JSON ".

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient, type Interceptor } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { InfoService, SandboxService, SandboxSpecSchema } from '@cove/contracts/orchestrator';
import { pino } from 'pino';
import { LinuxSandboxRuntime } from '../src/sandbox/linux-runtime.js';

const PKG = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const num = (name: string, def: number): number => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v >= 0 ? v : def;
};
const HITS = num('COVE_BENCH_HITS', 10);
const MISSES = num('COVE_BENCH_MISSES', 5);
const POOL = Math.max(1, num('COVE_BENCH_POOL', 3));
const MAX_IDLE = num('COVE_BENCH_MAX_IDLE', 100);

const INSTANCE = 'covbench';
const DATA_DIR = '/var/tmp/cove-bench/covbench';
const TEMPLATE_CACHE = process.env.COVE_TEMPLATE_CACHE_DIR ?? '/var/tmp/cove-runtime-test/templates';
const TOKEN = 'bench-node-token-0123456789abcdef';
const NODE_ID = 'bench-node';
const ENV = {
  PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
  COVE_NODE_ID: NODE_ID,
  COVE_NODE_TOKEN: TOKEN,
  // Required since manifests are authenticated; without it the node refuses to start and `cove bench` aborts.
  COVE_ARTIFACT_KEY: 'bench-artifact-key-0123456789abcdef0123456789',
  COVE_ORCH_RPC_PORT: '0',
  COVE_ORCH_PROXY_PORT: '0',
  COVE_DATA_DIR: DATA_DIR,
  COVE_TEMPLATE_CACHE_DIR: TEMPLATE_CACHE,
  COVE_RUNTIME_INSTANCE: INSTANCE,
  COVE_VETH_PREFIX: 'cbn-',
  COVE_SANDBOX_SUBNET: '10.240.0.0/16',
  COVE_WARM_POOL: `base=${POOL}`,
  COVE_MAX_SANDBOXES: String(Math.max(MAX_IDLE, 1) + 2),
  COVE_CPU_OVERCOMMIT: '1000',
  COVE_LOG_LEVEL: 'info',
};

function runtime(): LinuxSandboxRuntime {
  return new LinuxSandboxRuntime({
    dataDir: DATA_DIR,
    templatesDir: TEMPLATE_CACHE,
    envdDir: join(PKG, '..', 'envd', 'dist', 'bundle'),
    nodeBinary: process.execPath,
    logger: pino({ level: 'error' }),
    instance: INSTANCE,
    vethPrefix: 'cbn-',
    subnet: '10.240.0.0/16',
  });
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function summary(samples: number[]): { n: number; p50: number; p95: number; min: number; max: number } {
  const s = [...samples].sort((a, b) => a - b);
  const r = (x: number): number => Math.round(x * 10) / 10;
  return { n: s.length, p50: r(pct(s, 50)), p95: r(pct(s, 95)), min: r(s[0] ?? NaN), max: r(s.at(-1) ?? NaN) };
}

/** PSS (bytes) of every process in the slot's cgroup, from /proc/<pid>/smaps_rollup. */
async function slotPss(slotId: string): Promise<number> {
  let procs = '';
  for (const f of [`/sys/fs/cgroup/pids/${INSTANCE}/${slotId}/cgroup.procs`, `/sys/fs/cgroup/${INSTANCE}/${slotId}/cgroup.procs`]) {
    procs = await readFile(f, 'utf8').catch(() => '');
    if (procs) break;
  }
  let total = 0;
  for (const pid of procs.split('\n').filter(Boolean)) {
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
    const m = /^Pss:\s+(\d+) kB/m.exec(rollup);
    if (m) total += Number(m[1]) * 1024;
  }
  return total;
}

async function main(): Promise<void> {
  await runtime().teardownHost().catch(() => undefined);
  await rm(DATA_DIR, { recursive: true, force: true });

  const child = spawn(process.execPath, [join(PKG, 'dist', 'src', 'main.js')], { env: ENV, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout! });
  const rpcPort = await new Promise<number>((resolve, reject) => {
    lines.on('line', (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; rpcPort?: number };
        if (rec.msg === 'orchestrator listening') resolve(rec.rpcPort!);
      } catch {
        /* not JSON */
      }
    });
    void exited.then(() => reject(new Error('orchestrator exited before listening')));
  });
  const auth: Interceptor = (next) => (req) => {
    req.header.set('authorization', `Bearer ${TOKEN}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${rpcPort}`, interceptors: [auth] });
  const sandboxes = createClient(SandboxService, transport);
  const info = createClient(InfoService, transport);
  const poolReady = async (want: number, timeoutMs = 180_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (((await info.info({})).warmPools[0]?.ready ?? 0) < want) {
      if (Date.now() > deadline) throw new Error('warm pool did not fill');
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const spec = (sandboxId: string, diskMb: number) =>
    create(SandboxSpecSchema, {
      sandboxId,
      templateId: 'base',
      vcpu: 1,
      memoryMb: 256,
      diskMb,
      endTime: timestampFromMs(Date.now() + 3_600_000),
      envdAccessToken: 'bench-token',
    });

  const hit: number[] = [];
  const miss: number[] = [];
  const del: number[] = [];
  let hitsReported = 0;
  try {
    for (let i = 0; i < HITS; i++) {
      await poolReady(1);
      const t = performance.now();
      const res = await sandboxes.create({ sandbox: spec(`hit${i}`, 1024) });
      hit.push(performance.now() - t);
      if (res.warmPoolHit) hitsReported++;
      const d = performance.now();
      await sandboxes.delete({ sandboxId: `hit${i}` });
      del.push(performance.now() - d);
    }
    await poolReady(POOL);
    for (let i = 0; i < MISSES; i++) {
      const t = performance.now();
      await sandboxes.create({ sandbox: spec(`miss${i}`, 768) });
      miss.push(performance.now() - t);
      await sandboxes.delete({ sandboxId: `miss${i}` });
    }

    // Density: idle sandboxes until the node refuses or MAX_IDLE is reached.
    let held = 0;
    let stoppedBy = 'limit';
    for (; held < MAX_IDLE; held++) {
      try {
        await sandboxes.create({ sandbox: spec(`idle${held}`, 1024) });
      } catch (err) {
        stoppedBy = ConnectError.from(err).code === Code.ResourceExhausted ? 'node full' : `error: ${ConnectError.from(err).message}`;
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 2000)); // let envd settle to idle before measuring memory
    const pss: number[] = [];
    for (let i = 0; i < held; i++) {
      const rec = JSON.parse(await readFile(join(DATA_DIR, 'orchestrator', NODE_ID, 'sandboxes', `idle${i}.json`), 'utf8')) as { slotId: string };
      pss.push(await slotPss(rec.slotId));
    }
    const mib = pss.map((b) => b / (1024 * 1024));
    const result = {
      createWarmHitMs: summary(hit),
      createWarmMissMs: summary(miss),
      deleteMs: summary(del),
      warmHitsReported: `${hitsReported}/${HITS}`,
      idleSandboxPssMiB: summary(mib),
      idleSandboxesHeld: held,
      idleStoppedBy: stoppedBy,
      nodeMemoryUsedBytes: Number((await info.info({})).usage?.memoryUsedBytes ?? 0n),
    };
    const row = (name: string, s: { n: number; p50: number; p95: number; min: number; max: number }, unit: string): string =>
      `${name.padEnd(26)} ${String(s.n).padStart(4)} ${String(s.p50).padStart(9)} ${String(s.p95).padStart(9)} ${String(s.min).padStart(9)} ${String(s.max).padStart(9)}  ${unit}`;
    const out = [
      `${'metric'.padEnd(26)} ${'n'.padStart(4)} ${'p50'.padStart(9)} ${'p95'.padStart(9)} ${'min'.padStart(9)} ${'max'.padStart(9)}`,
      row('create (warm-pool hit)', result.createWarmHitMs, 'ms'),
      row('create (warm-pool miss)', result.createWarmMissMs, 'ms'),
      row('delete', result.deleteMs, 'ms'),
      row('idle sandbox PSS', result.idleSandboxPssMiB, 'MiB'),
      `idle sandboxes held: ${held} (${stoppedBy}); warm hits reported ${result.warmHitsReported}`,
      `BENCH_JSON ${JSON.stringify(result)}`,
      ...[
        { name: 'orchestrator Create, warm-pool hit p50', value: result.createWarmHitMs.p50, unit: 'ms', target: '≤ 20' },
        { name: 'orchestrator Create, warm-pool hit p95', value: result.createWarmHitMs.p95, unit: 'ms' },
        { name: 'orchestrator Create, warm-pool miss p50', value: result.createWarmMissMs.p50, unit: 'ms' },
        { name: 'orchestrator Create, warm-pool miss p95', value: result.createWarmMissMs.p95, unit: 'ms' },
        { name: 'host memory per idle sandbox (PSS) p50', value: result.idleSandboxPssMiB.p50, unit: 'MiB', target: '≤ 20' },
        { name: `idle sandboxes one node held (${stoppedBy})`, value: held, unit: 'count' },
      ].map((r) => `BENCH_RESULT ${JSON.stringify(r)}`),
    ];
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    child.kill('SIGTERM');
    await exited;
    await runtime().teardownHost().catch(() => undefined);
    await rm(DATA_DIR, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
