import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

function walk(dir: string, suffix: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? walk(p, suffix) : p.endsWith(suffix) ? [p] : [];
  });
}

/** Compiled test files of every package, or of the named ones. */
export function testFiles(only: string[] = []): string[] {
  const pkgs = readdirSync(join(repoRoot, 'packages')).filter((p) => only.length === 0 || only.includes(p));
  return pkgs.flatMap((p) => walk(join(repoRoot, 'packages', p, 'dist', 'test'), '.test.js')).sort();
}

/** Runs the suite with Node's test runner; resolves to its exit code. */
export function runTests(files: string[], extraArgs: string[] = [], env: Record<string, string> = {}, signal?: AbortSignal): Promise<number> {
  const args = ['--test', '--test-concurrency=1', '--test-reporter=spec', ...extraArgs, ...files];
  return new Promise((resolve) => {
    // An abort (Ctrl-C of `cove test`) ends the runner, whose test processes then end with it.
    const child = spawn(process.execPath, args, { stdio: 'inherit', cwd: repoRoot, env: { ...process.env, ...env }, ...(signal ? { signal, killSignal: 'SIGINT' as const } : {}) });
    child.on('error', () => undefined); // an abort: 'exit' follows
    child.on('exit', (code, sig) => resolve(code ?? (sig ? 1 : 0)));
  });
}

/** Compiled benchmark files (`bench/*.bench.js`) of every package. */
export function benchFiles(only: string[] = []): string[] {
  const pkgs = readdirSync(join(repoRoot, 'packages')).filter((p) => only.length === 0 || only.includes(p));
  return pkgs.flatMap((p) => walk(join(repoRoot, 'packages', p, 'dist', 'bench'), '.bench.js')).sort();
}
