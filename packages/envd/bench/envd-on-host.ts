// envd run on the host from the built bundle, for the benches that compare two ways of starting it (flags, a
// preload): its idle memory as in a node, and its cost when it works. Not a sandbox's full cost (that is
// `cove bench --density`).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sandbox } from 'e2b';
import { ENVD_RUNTIME_ENV } from '@cove/contracts/sandbox';

export const BUNDLE_DIR = fileURLToPath(new URL('../bundle', import.meta.url));
const BUNDLE = join(BUNDLE_DIR, 'envd.cjs');
/** envds side by side for the idle figure (their shared pages then split as in a node). */
const IDLE_ENVDS = 10;
const IDLE_MS = 8000;
const OUTPUT_BYTES = 10_000_000;
const CLOCK_TICKS = 100;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

/** How one arm starts envd: node flags, and a command prefix that execs node (envd-boot). */
export interface EnvdStart {
  flags: readonly string[];
  wrap?: readonly string[];
}

interface Envd { proc: ChildProcess; url: string; token: string }

async function startEnvd(how: EnvdStart, port: number): Promise<Envd> {
  const token = randomBytes(16).toString('hex');
  const argv = [...(how.wrap ?? []), process.execPath, ...how.flags, BUNDLE];
  const proc = spawn(argv[0]!, argv.slice(1), {
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

/** KiB lines of /proc/<pid>/smaps_rollup and /proc/<pid>/status. */
async function kib(file: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of (await readFile(file, 'utf8')).matchAll(/^(\w+):\s+(\d+) kB/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

async function cpuMs(pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS;
}

export interface Idle { anon: number; pss: number; pageTables: number; threads: number }

/** Anonymous memory, PSS and page tables (MiB, mean) of envds idle as in a node: /init done, the node's log wait held. */
export async function idleMemory(how: EnvdStart): Promise<Idle> {
  const envds: Envd[] = [];
  const waits = new AbortController();
  try {
    for (let i = 0; i < IDLE_ENVDS; i++) envds.push(await startEnvd(how, 46_000 + i));
    for (const e of envds) void fetch(`${e.url}/cove/logs/wait?after=999999&wait=25000`, { headers: { 'x-cove-init-token': e.token }, signal: waits.signal }).catch(() => undefined);
    await sleep(IDLE_MS);
    let anon = 0, pss = 0, pageTables = 0, threads = 0;
    for (const e of envds) {
      const r = await kib(`/proc/${e.proc.pid}/smaps_rollup`);
      anon += r.Anonymous! / 1024;
      pss += r.Pss! / 1024;
      pageTables += (await kib(`/proc/${e.proc.pid}/status`)).VmPTE! / 1024;
      threads += (await readdir(`/proc/${e.proc.pid}/task`)).length;
    }
    const n = envds.length;
    return { anon: anon / n, pss: pss / n, pageTables: pageTables / n, threads: threads / n };
  } finally {
    waits.abort();
    for (const e of envds) e.proc.kill('SIGKILL');
  }
}

export interface Work { bootMs: number; bootCpuMs: number; firstCommandMs: number; runTrueP50Ms: number; outputMs: number; outputCpuMs: number; filesMs: number; filesCpuMs: number; workedPageTables: number }

/** One fresh envd: boot to /health, the first command, 30 more, 10 MB of stdout, a 10 MB file up and back. */
export async function work(how: EnvdStart, dir: string): Promise<Work> {
  const t0 = performance.now();
  const e = await startEnvd(how, 46_100);
  try {
    const bootMs = performance.now() - t0;
    const pid = e.proc.pid!;
    const bootCpuMs = await cpuMs(pid);
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
    const filesMs = performance.now() - t;
    const filesCpuMs = (await cpuMs(pid)) - c;
    const workedPageTables = (await kib(`/proc/${pid}/status`)).VmPTE! / 1024;
    return { bootMs, bootCpuMs, firstCommandMs, runTrueP50Ms: median(runs), outputMs, outputCpuMs, filesMs, filesCpuMs, workedPageTables };
  } finally {
    e.proc.kill('SIGKILL');
  }
}

export type Figures = Idle & Work;

/** Runs arm a then arm b, `rounds` times, each round an idle set and a working envd per arm; prints each round. */
export async function alternate(a: EnvdStart, b: EnvdStart, rounds: number, dir: string, label: (arm: 'a' | 'b') => string): Promise<{ a: Figures[]; b: Figures[] }> {
  const seen = { a: [] as Figures[], b: [] as Figures[] };
  for (let round = 1; round <= rounds; round++) {
    for (const [key, how] of [['a', a], ['b', b]] as const) {
      const r = { ...(await idleMemory(how)), ...(await work(how, dir)) };
      seen[key].push(r);
      process.stdout.write(`round ${round} ${label(key)}: idle anon ${r.anon.toFixed(2)} MiB, PSS ${r.pss.toFixed(2)} MiB, page tables ${r.pageTables.toFixed(2)} MiB; boot ${r.bootMs.toFixed(0)} ms (CPU ${r.bootCpuMs} ms), first command ${r.firstCommandMs.toFixed(1)} ms, run p50 ${r.runTrueP50Ms.toFixed(1)} ms; 10 MB stdout ${r.outputMs.toFixed(0)} ms (envd CPU ${r.outputCpuMs} ms); 10 MB file up+down ${r.filesMs.toFixed(0)} ms (envd CPU ${r.filesCpuMs} ms); page tables after ${r.workedPageTables.toFixed(2)} MiB\n`);
    }
  }
  return seen;
}

/** Prints one figure as `cove bench` reads it: arm b's median over the rounds, with arm a's beside it. */
export function emitPair(seen: { a: Figures[]; b: Figures[] }, baselineLabel: string) {
  return (name: string, k: keyof Figures, unit: string): void => {
    const value = median(seen.b.map((r) => r[k]));
    const baseline = median(seen.a.map((r) => r[k]));
    process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name, value, unit, baseline, baselineLabel })}\n`);
  };
}
