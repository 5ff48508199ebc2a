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
