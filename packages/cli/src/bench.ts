import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

/** One figure a benchmark measured. */
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  target?: string;
  /** The same figure measured in the same run under a reference condition (e.g. telemetry off), and what that is. */
  baseline?: number;
  baselineLabel?: string;
}

const MARK = 'BENCH_RESULT ';

/**
 * Runs each benchmark file as its own process (load generator apart from the servers it
 * measures). A benchmark reports figures by printing lines `BENCH_RESULT {"name",...}`.
 */
export async function runBenches(files: string[], env: Record<string, string>, say: (l: string) => void, signal?: AbortSignal): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  for (const file of files) {
    say(`bench ${file.replace(repoRoot + '/', '')}`);
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, [file], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'], ...(signal ? { signal } : {}) });
      let text = '';
      child.stdout.on('data', (d: Buffer) => {
        text += d.toString();
        for (const line of d.toString().split('\n')) if (line && !line.startsWith(MARK)) say(`  ${line}`);
      });
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`${file} exited with ${code}`))));
    });
    for (const line of out.split('\n')) if (line.startsWith(MARK)) results.push(JSON.parse(line.slice(MARK.length)) as BenchResult);
  }
  return results;
}

export function printTable(results: BenchResult[], say: (l: string) => void): void {
  const w = Math.max(...results.map((r) => r.name.length), 10);
  say(`${'benchmark'.padEnd(w)}  ${'value'.padStart(12)}  unit    target`);
  for (const r of results) {
    const base = r.baseline === undefined ? '' : `  (baseline ${r.baseline.toFixed(2)}: ${r.baselineLabel ?? ''})`;
    say(`${r.name.padEnd(w)}  ${r.value.toFixed(2).padStart(12)}  ${r.unit.padEnd(6)}  ${r.target ?? ''}${base}`);
  }
}

export function writeJson(results: BenchResult[]): string {
  const dir = join(repoRoot, 'bench-results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ at: new Date().toISOString(), results }, null, 2) + '\n');
  return file;
}

/** The density bench (`cove bench --density`): it holds the machine, so the plain `cove bench` never runs it. */
export const DENSITY_BENCH = join(repoRoot, 'packages/e2e/dist/bench/density.bench.js');

export interface DensityFlags {
  max: string;
  memoryOvercommit: string;
}

/**
 * What the density deployment's processes get on top of their defaults (never by editing a default): memory
 * placement overcommitted as asked, and every other placement cap out of the way so the node's own limits, not a
 * policy, stop the bench — CPU (2 vCPUs per `base` sandbox against 32 per core), disk (1 GiB sparse per sandbox;
 * the node's real free space still bounds placement), the node's and the team's sandbox counts.
 */
export function densityDeploymentEnv(f: DensityFlags): Record<string, string> {
  const max = Number(f.max);
  const overcommit = Number(f.memoryOvercommit);
  if (!Number.isInteger(max) || max < 1) throw Object.assign(new Error('--max must be a whole number of sandboxes, at least 1'), { code: 'invalid_bench_flags' });
  if (!Number.isFinite(overcommit) || overcommit < 1) throw Object.assign(new Error('--memory-overcommit must be a number, at least 1'), { code: 'invalid_bench_flags' });
  return {
    COVE_MEMORY_OVERCOMMIT: String(overcommit),
    COVE_CPU_OVERCOMMIT: '4096',
    COVE_DISK_OVERCOMMIT: '64',
    COVE_MAX_SANDBOXES: '100000',
    COVE_DEFAULT_MAX_SANDBOXES: '100000',
    COVE_DENSITY_MAX: String(max),
  };
}
