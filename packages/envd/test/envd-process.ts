import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { eventually } from '@cove/test-support/eventually';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

/**
 * As root, envd runs with an empty /root of its own (a private mount namespace). A command is a login shell, and
 * as root it reads root's dotfiles: the host's (pyenv, cargo, …) are not a sandbox's, and a stale pyenv rehash
 * lock left by a killed shell made every later root command wait 60 s. Not where envd itself lives under /root.
 */
const OWN_ROOT_HOME =
  process.getuid?.() === 0 && ![MAIN, process.execPath].some((p) => p.startsWith('/root/'))
    ? ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o mode=0700 cove-test-root /root && exec "$0" "$@"']
    : [];

/** A real envd child process on a free loopback port. */
export interface RunningEnvd {
  url: string;
  port: number;
  initToken: string;
  proc: ChildProcess;
  logs: string[];
  /** POST /init with the orchestrator's init token. */
  init(body: Record<string, unknown>): Promise<Response>;
  alive(): boolean;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Script to run instead of the compiled main.js (e.g. the bundle). */
  entry?: string;
  nodeFlags?: string[];
  /** Command prefix that execs its arguments (e.g. an `unshare` wrapper). */
  wrap?: string[];
}

export async function startEnvd(env: Record<string, string> = {}, opts: StartOptions = {}): Promise<RunningEnvd> {
  const initToken = 'init-' + randomBytes(16).toString('hex');
  const argv = [process.execPath, ...(opts.nodeFlags ?? []), opts.entry ?? MAIN];
  const full = [...OWN_ROOT_HOME, ...(opts.wrap ?? []), ...argv];
  const proc = spawn(full[0], full.slice(1), {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ENVD_PORT: '0', ENVD_HOST: '127.0.0.1', COVE_ENVD_INIT_TOKEN: initToken, ENVD_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  proc.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
  const lines = createInterface({ input: proc.stdout! });
  const port = await new Promise<number>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`envd exited early (${code}): ${logs.join('')}`)));
    lines.on('line', (line) => {
      logs.push(line);
      try {
        const rec = JSON.parse(line) as { msg?: string; port?: number };
        if (rec.msg === 'envd listening' && rec.port) resolve(rec.port);
      } catch {
        // not JSON
      }
    });
  });
  const url = `http://127.0.0.1:${port}`;
  let exited = false;
  let stopping = false;
  proc.once('exit', (code, signal) => {
    exited = true;
    if (!stopping) process.stderr.write(`envd exited unexpectedly (${code ?? signal}):\n${logs.join('\n')}\n`);
  });
  return {
    url,
    port,
    initToken,
    proc,
    logs,
    init: (body) =>
      fetch(`${url}/init`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-cove-init-token': initToken }, body: JSON.stringify(body) }),
    alive: () => !exited && proc.exitCode === null,
    async stop() {
      if (exited) return;
      stopping = true;
      proc.kill('SIGTERM');
      await once(proc, 'exit');
    },
  };
}

/** A fresh temp dir, removed by the returned cleanup. */
export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'envd-test-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Polls `check` until it returns a truthy value or the deadline passes (test-support's poll, in this file's argument order). */
export function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10_000): Promise<NonNullable<T>> {
  return eventually(async () => (await check()) || undefined, timeoutMs, what, 20) as Promise<NonNullable<T>>;
}
