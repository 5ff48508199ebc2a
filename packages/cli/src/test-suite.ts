import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync, readdirSync, statSync, statfsSync } from 'node:fs';
import { dirname, join } from 'node:path';
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

/**
 * Packages whose every test holds machine-wide resources (sandboxes, crun, CRIU, cgroups, a deployment) or is
 * timing-sensitive under load: their files run one at a time.
 */
const SERIAL_PACKAGES = ['orchestrator', 'code-interpreter', 'e2e'];
/** A file elsewhere that must run alone says so in its first lines (kept by tsc in the compiled file). */
const SERIAL_MARK = 'cove-test: serial';

function marked(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(512);
    return head.subarray(0, readSync(fd, head, 0, head.length, 0)).toString('utf8').includes(SERIAL_MARK);
  } finally {
    closeSync(fd);
  }
}

/** Splits test files into those that may run two at a time and those that run alone. */
export function byConcurrency(files: string[]): { parallel: string[]; serial: string[] } {
  const serial = (f: string) => SERIAL_PACKAGES.some((p) => f.includes(`/packages/${p}/`)) || marked(f);
  return { parallel: files.filter((f) => !serial(f)), serial: files.filter(serial) };
}

/** Runs the suite with Node's test runner (one file at a time unless `concurrency` says more); resolves to its exit code. */
export function runTests(files: string[], extraArgs: string[] = [], env: Record<string, string> = {}, signal?: AbortSignal, concurrency = 1): Promise<number> {
  // --test-force-exit: a file's process ends once its tests and hooks have, instead of when its event loop empties.
  // The unchanged SDKs leave timers behind (@e2b/code-interpreter's 60 s request timer outlives a refused runCode),
  // and each such timer held its file, and the suite behind it, for up to a minute after the last test.
  const args = ['--test', '--test-force-exit', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...extraArgs, ...files];
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

/**
 * What the suite writes at its peak beyond a built checkout, on a machine where nothing is cached yet: the nodes'
 * base, code-interpreter and desktop rootfs (~3.4 GiB), the runtime tests' own template copies (~1.9 GiB), one
 * runtime test's data dir at a time (~0.2 GiB), the e2e deployment's two nodes (~1 GiB).
 */
export const SUITE_DISK_BYTES = 7 * 1024 ** 3;

/**
 * Free bytes on the filesystem holding `path` (its nearest existing parent), for the suite's preflight: a disk that
 * fills mid-run fails dozens of unrelated tests with ENOSPC, so the run says so first.
 */
export function freeBytes(path: string): number {
  let p = path;
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  const s = statfsSync(p);
  return s.bavail * s.bsize;
}
