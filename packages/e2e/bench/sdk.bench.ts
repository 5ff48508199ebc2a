// Benchmarks through the unchanged SDK against a deployment started like `cove up`
// (`cove bench` starts one and passes COVE_E2E_STATE_DIR). This process is only the
// load generator; every server runs in its own process.
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { haproxyRunFiles, haproxyRuntimeCommand } from '@cove/edge';
import { deployment } from '../test/deployment.js';
import { percentile, report, say } from './stats.js';
import { poolsSettled } from './warm-pools.js';

const SERIAL = Number(process.env.COVE_BENCH_SERIAL ?? 30);
/** Creates one at a time with a pause between, as an agent makes them (the pool's refill of each take done). */
const SPACED = Number(process.env.COVE_BENCH_SPACED ?? 20);
const SPACED_GAP_MS = 500;
const CONCURRENCY = 20;
const CONCURRENT_TOTAL = Number(process.env.COVE_BENCH_CONCURRENT_TOTAL ?? 40);

async function createAndRun(): Promise<{ ms: number; sbx: Sandbox }> {
  const t0 = performance.now();
  const sbx = await Sandbox.create({ timeoutMs: 120_000 });
  await sbx.commands.run('true');
  return { ms: performance.now() - t0, sbx };
}

async function serialCreate(): Promise<void> {
  const times: number[] = [];
  for (let i = 0; i < SERIAL; i++) {
    const { ms, sbx } = await createAndRun();
    times.push(ms);
    await sbx.kill();
  }
  report('create→first command, serial p50', percentile(times, 50), 'ms', '≤ 40');
  report('create→first command, serial p95', percentile(times, 95), 'ms', '≤ 80');
}

async function spacedCreate(): Promise<void> {
  const times: number[] = [];
  for (let i = 0; i < SPACED; i++) {
    // The workload's shape, not a synchronisation: the previous sandbox's teardown and refill run in the gap.
    await new Promise((resolve) => setTimeout(resolve, SPACED_GAP_MS));
    const { ms, sbx } = await createAndRun();
    times.push(ms);
    await sbx.kill();
  }
  report(`create→first command, one every ${SPACED_GAP_MS} ms p50`, percentile(times, 50), 'ms', '≤ 40');
  report(`create→first command, one every ${SPACED_GAP_MS} ms p95`, percentile(times, 95), 'ms', '≤ 80');
}

async function concurrentCreate(): Promise<void> {
  const times: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < CONCURRENT_TOTAL) {
        next++;
        const { ms, sbx } = await createAndRun();
        times.push(ms);
        // Killed before this worker's next create (outside the measured time), so at most 20 live sandboxes:
        // the team's concurrency limit.
        await sbx.kill();
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  report(`create→first command, ${CONCURRENCY} concurrent p95`, percentile(times, 95), 'ms', '≤ 250');
  report(`creates per second at ${CONCURRENCY} concurrent`, CONCURRENT_TOTAL / seconds, '1/s');
}

async function runRoundTrip(): Promise<void> {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 });
  try {
    for (let i = 0; i < 10; i++) await sbx.commands.run('true');
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now();
      await sbx.commands.run('true');
      times.push(performance.now() - t0);
    }
    report('commands.run("true") round trip p50', percentile(times, 50), 'ms', '≤ 8');
    report('commands.run("true") round trip p95', percentile(times, 95), 'ms');
  } finally {
    await sbx.kill();
  }
}

/** Runs the load generator in its own process and returns requests/s. */
function load(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(new URL('./load.js', import.meta.url)), [url, JSON.stringify(headers), '5000', '32'], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(Number(JSON.parse(out).rps)) : reject(new Error(`load exited ${code}`))));
  });
}

/**
 * HTTP requests/s to a sandbox's server: straight to it, and through the edge's traffic port as deployed (one hop
 * where the edge shares the node's network namespace). Beside it, the same edge with the sandbox's one-hop route
 * taken out of HAProxy's map (through the node proxy: two hops), rounds alternated so the ratios hold on a busy machine.
 */
async function proxyOverhead(): Promise<void> {
  const d = deployment();
  const files = haproxyRunFiles(join(d.stateDir, 'data', 'edge-run'));
  const sbx = await Sandbox.create({ timeoutMs: 300_000 });
  try {
    await sbx.commands.run(
      `node -e "require('http').createServer((q,s)=>s.end('ok')).listen(8000,'0.0.0.0')" >/dev/null 2>&1`,
      { background: true, timeoutMs: 0 },
    );
    const ip = (await sbx.commands.run("hostname -I | awk '{print $1}'")).stdout.trim();
    for (let i = 0; i < 100; i++) {
      if ((await sbx.commands.run('curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:8000/ || true')).stdout === '200') break;
    }
    const route = { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8000' };
    const oneHop = existsSync(files.socketPath) && (await haproxyRuntimeCommand(files.socketPath, [`show map ${files.directMapPath}`])).includes(` ${sbx.sandboxId} `);
    const setRoute = async (direct: boolean) => {
      const commands = [`del map ${files.directMapPath} ${sbx.sandboxId}`, ...(direct ? [`add map ${files.directMapPath} ${sbx.sandboxId} ${ip}`] : [])];
      await haproxyRuntimeCommand(files.socketPath, commands);
    };
    const rounds: { direct: number; edge: number; twoHops?: number }[] = [];
    try {
      for (let r = 0; r < 3; r++) {
        const direct = await load(`http://${ip}:8000/`, {});
        const edge = await load(`http://127.0.0.1:${d.ports.edgeTraffic}/`, route);
        let twoHops: number | undefined;
        if (oneHop) {
          await setRoute(false);
          twoHops = await load(`http://127.0.0.1:${d.ports.edgeTraffic}/`, route);
          await setRoute(true);
        }
        rounds.push({ direct, edge, ...(twoHops !== undefined ? { twoHops } : {}) });
        say(`proxy round ${r + 1}, requests/s: ${JSON.stringify(rounds.at(-1))}`);
      }
    } finally {
      if (oneHop) await setRoute(true);
    }
    const median = (xs: number[]) => percentile(xs, 50);
    report('requests/s straight to the sandbox', median(rounds.map((r) => r.direct)), '1/s');
    report('requests/s through the edge', median(rounds.map((r) => r.edge)), '1/s');
    report('edge proxy ratio (edge / direct)', median(rounds.map((r) => r.edge / r.direct)), 'x', '≥ 0.7');
    if (oneHop) report('edge proxy ratio through the node proxy (two hops, same run)', median(rounds.map((r) => r.twoHops! / r.direct)), 'x');
  } finally {
    await sbx.kill();
  }
}


deployment();
await poolsSettled();
await runRoundTrip();
await poolsSettled();
await serialCreate();
await poolsSettled();
await spacedCreate();
await poolsSettled();
await concurrentCreate();
await poolsSettled();
await proxyOverhead();
