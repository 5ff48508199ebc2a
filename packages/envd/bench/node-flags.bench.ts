// envd's node flags, before and after `--optimize-for-size` (issue 14, density): what an idle envd keeps
// (private anonymous memory: what every idle sandbox pays) and what the flag costs when envd works (boot, the first
// command, command output and file transfer through the unchanged SDK, envd's own CPU time). The two flag sets
// run alternately (A B A B …) on the built bundle, so each figure has its same-run baseline beside it.
// envd runs on the host here, not in a sandbox: the figures compare flags, they are not a sandbox's full cost
// (that is `cove bench --density`).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sandbox } from 'e2b';
import { ENVD_RUNTIME_ENV } from '@cove/contracts/sandbox';

const BUNDLE = fileURLToPath(new URL('../bundle/envd.cjs', import.meta.url));
/** The orchestrator's envd flags before this change; CURRENT is its ENVD_ARGS (orchestrator sandbox/first-process.ts). */
const PREVIOUS = ['--max-semi-space-size=1', '--max-old-space-size=128', '--v8-pool-size=1'];
const CURRENT = [...PREVIOUS, '--optimize-for-size'];
const ROUNDS = Number(process.env.COVE_ENVD_FLAGS_ROUNDS ?? 3);
/** envds side by side for the idle figure (their shared pages then split as in a node). */
const IDLE_ENVDS = 10;
const IDLE_MS = 8000;
const OUTPUT_BYTES = 10_000_000;
const CLOCK_TICKS = 100;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
function emit(name: string, value: number, unit: string, baseline: number): void {
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name, value, unit, baseline, baselineLabel: 'without --optimize-for-size, same run' })}\n`);
}

interface Envd { proc: ChildProcess; url: string; token: string }

async function startEnvd(flags: string[], port: number): Promise<Envd> {
  const token = randomBytes(16).toString('hex');
  const proc = spawn(process.execPath, [...flags, BUNDLE], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...ENVD_RUNTIME_ENV, ENVD_PORT: String(port), ENVD_HOST: '127.0.0.1', COVE_ENVD_INIT_TOKEN: token, ENVD_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`envd exited (${proc.exitCode})`);
    if (i > 3000) throw new Error('envd did not answer /health');
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      /* not listening yet */
    }
    await sleep(5);
  }
  const init = await fetch(`${url}/init`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-cove-init-token': token }, body: JSON.stringify({ defaultUser: 'root', timestamp: new Date().toISOString() }) });
  if (init.status !== 204) throw new Error(`/init answered ${init.status}`);
  return { proc, url, token };
}

/** KiB lines of /proc/<pid>/smaps_rollup. */
async function rollup(pid: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of (await readFile(`/proc/${pid}/smaps_rollup`, 'utf8')).matchAll(/^(\w+):\s+(\d+) kB/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

async function cpuMs(pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS;
}

/** Anonymous and PSS (MiB, mean) of envds idle as in a node: /init done, the node's log wait held. */
async function idleMemory(flags: string[]): Promise<{ anon: number; pss: number; threads: number }> {
  const envds: Envd[] = [];
  const waits = new AbortController();
  try {
    for (let i = 0; i < IDLE_ENVDS; i++) envds.push(await startEnvd(flags, 46_000 + i));
    for (const e of envds) void fetch(`${e.url}/cove/logs/wait?after=999999&wait=25000`, { headers: { 'x-cove-init-token': e.token }, signal: waits.signal }).catch(() => undefined);
    await sleep(IDLE_MS);
    let anon = 0, pss = 0, threads = 0;
    for (const e of envds) {
      const r = await rollup(e.proc.pid!);
      anon += r.Anonymous! / 1024;
      pss += r.Pss! / 1024;
      threads += (await readdir(`/proc/${e.proc.pid}/task`)).length;
    }
    return { anon: anon / envds.length, pss: pss / envds.length, threads: threads / envds.length };
  } finally {
    waits.abort();
    for (const e of envds) e.proc.kill('SIGKILL');
  }
}

interface Work { bootMs: number; firstCommandMs: number; runTrueP50Ms: number; outputMs: number; outputCpuMs: number; filesMs: number; filesCpuMs: number }

/** One fresh envd: boot to /health, the first command, 30 more, 10 MB of stdout, a 10 MB file up and back. */
async function work(flags: string[], dir: string): Promise<Work> {
  const t0 = performance.now();
  const e = await startEnvd(flags, 46_100);
  try {
    const bootMs = performance.now() - t0;
    const pid = e.proc.pid!;
    const sbx = await Sandbox.create({ debug: true, sandboxUrl: e.url });
    let t = performance.now();
    await sbx.commands.run('true');
    const firstCommandMs = performance.now() - t;
    const runs: number[] = [];
    for (let i = 0; i < 30; i++) {
      t = performance.now();
      await sbx.commands.run('true');
      runs.push(performance.now() - t);
    }
    let c = await cpuMs(pid);
    t = performance.now();
    const out = await sbx.commands.run(`head -c ${OUTPUT_BYTES} /dev/zero | tr '\\0' a`);
    if (out.stdout.length !== OUTPUT_BYTES) throw new Error(`stdout: ${out.stdout.length} bytes`);
    const outputMs = performance.now() - t;
    const outputCpuMs = (await cpuMs(pid)) - c;
    c = await cpuMs(pid);
    t = performance.now();
    await sbx.files.write(join(dir, 'f.bin'), new Uint8Array(OUTPUT_BYTES).fill(98));
    const back = await sbx.files.read(join(dir, 'f.bin'), { format: 'bytes' });
    if (back.length !== OUTPUT_BYTES) throw new Error(`file: ${back.length} bytes`);
    return { bootMs, firstCommandMs, runTrueP50Ms: median(runs), outputMs, outputCpuMs, filesMs: performance.now() - t, filesCpuMs: (await cpuMs(pid)) - c };
  } finally {
    e.proc.kill('SIGKILL');
  }
}

const dir = await mkdtemp(join(tmpdir(), 'envd-flags-'));
const seen = { a: [] as Array<Awaited<ReturnType<typeof idleMemory>> & Work>, b: [] as Array<Awaited<ReturnType<typeof idleMemory>> & Work> };
try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [key, flags] of [['a', PREVIOUS], ['b', CURRENT]] as const) {
      const r = { ...(await idleMemory(flags)), ...(await work(flags, dir)) };
      seen[key].push(r);
      process.stdout.write(`round ${round} ${key === 'a' ? 'without' : 'with   '} --optimize-for-size: idle anon ${r.anon.toFixed(2)} MiB, PSS ${r.pss.toFixed(2)} MiB; boot ${r.bootMs.toFixed(0)} ms, first command ${r.firstCommandMs.toFixed(1)} ms, run p50 ${r.runTrueP50Ms.toFixed(1)} ms; 10 MB stdout ${r.outputMs.toFixed(0)} ms (envd CPU ${r.outputCpuMs} ms); 10 MB file up+down ${r.filesMs.toFixed(0)} ms (envd CPU ${r.filesCpuMs} ms)\n`);
    }
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
type Figures = (typeof seen.a)[number];
/** The flag's median over the rounds, then the same run's median without it. */
function pair(k: keyof Figures, unit: string): [number, string, number] {
  return [median(seen.b.map((r) => r[k])), unit, median(seen.a.map((r) => r[k]))];
}
emit('envd idle: private anonymous memory (median of rounds)', ...pair('anon', 'MiB'));
emit('envd idle: PSS', ...pair('pss', 'MiB'));
emit('envd: boot to /health', ...pair('bootMs', 'ms'));
emit('envd: first command after boot', ...pair('firstCommandMs', 'ms'));
emit('envd: commands.run("true") p50', ...pair('runTrueP50Ms', 'ms'));
emit('envd: 10 MB of stdout, wall', ...pair('outputMs', 'ms'));
emit('envd: 10 MB of stdout, envd CPU', ...pair('outputCpuMs', 'ms'));
emit('envd: 10 MB file write + read, envd CPU', ...pair('filesCpuMs', 'ms'));
