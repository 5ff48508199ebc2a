// One HAProxy process in front of the edge's traffic port(s), supervised by the edge: its files (config,
// route maps, TLS PEM) rendered into the edge's run dir (0700 dir, 0600 files) at every start, a `haproxy -c`
// check first, then `haproxy -db` in the foreground as a child. It is ready once its runtime socket answers.
// An unexpected exit restarts it with backoff (maps rendered again from the catalog); after
// MAX_FAILED_STARTS starts in a row fail, `onGiveUp` hands the port back to the Node server.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { renderHaproxyConfig, type HaproxyConfigInput } from './haproxy-config.js';
import type { RouteMaps } from './route-maps.js';
import { runtimeCommand } from './runtime-socket.js';

const MAX_FAILED_STARTS = 5;
const BACKOFF_MS = [0, 100, 500, 2_000, 5_000];
const READY_TIMEOUT_MS = 10_000;
/** A run this long resets the failure count. */
const STABLE_AFTER_MS = 30_000;
/** HAProxy's own alerts and warnings go to the edge log, at most this many lines per process. */
const MAX_LOG_LINES = 50;

/** Where the HAProxy binary is, or undefined when it is not installed. */
export function findHaproxy(pathEnv = process.env.PATH ?? ''): string | undefined {
  for (const dir of [...pathEnv.split(delimiter), '/usr/sbin', '/usr/local/sbin']) {
    if (!dir) continue;
    const candidate = join(dir, 'haproxy');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

/** The unprivileged user HAProxy drops to when the edge runs as root (Debian's package creates it). */
function haproxyUser(): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    return /^haproxy:/m.test(readFileSync('/etc/passwd', 'utf8')) ? 'haproxy' : undefined;
  } catch {
    return undefined;
  }
}

/** What the supervisor needs. */
export interface HaproxySupervisorOptions {
  binary: string;
  runDir: string;
  host: string;
  port: number;
  tls?: { port: number; cert: Buffer; key: Buffer };
  sandboxDomain: string;
  fallbackPort: number;
  fallbackSecret: string;
  routes: RouteMaps;
  log: Logger;
  /** Called once when HAProxy cannot be kept running: the Node server takes the public port(s). */
  onGiveUp: () => void;
}

/** The file paths inside the run dir. */
export function runFiles(runDir: string) {
  return {
    config: join(runDir, 'haproxy.cfg'),
    socketPath: join(runDir, 'haproxy.sock'),
    sandboxMapPath: join(runDir, 'sandboxes.map'),
    nodeMapPath: join(runDir, 'nodes.map'),
    directMapPath: join(runDir, 'direct.map'),
    pem: join(runDir, 'traffic.pem'),
    pid: join(runDir, 'haproxy.pid'),
  };
}

/** A per-start secret for the fallback's trusted headers. */
export function newFallbackSecret(): string {
  return randomBytes(32).toString('hex');
}

export class HaproxySupervisor {
  private child: ChildProcess | undefined;
  private stopping = false;
  private failedStarts = 0;
  private timer: NodeJS.Timeout | undefined;
  private gaveUp = false;
  /** Set once the first start served: from then on an exit means a restart. */
  private supervising = false;
  private readonly files: ReturnType<typeof runFiles>;

  constructor(private readonly o: HaproxySupervisorOptions) {
    this.files = runFiles(o.runDir);
    o.routes.onEditFailed = async () => {
      await this.kill('SIGKILL');
    };
  }

  /** Pid of the running HAProxy (tests). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Start HAProxy; false when it cannot serve (not started, failed check or never ready). */
  async start(): Promise<boolean> {
    mkdirSync(this.o.runDir, { recursive: true, mode: 0o700 });
    await this.killStale();
    const user = haproxyUser();
    const input: HaproxyConfigInput = {
      host: this.o.host,
      port: this.o.port,
      ...(this.o.tls ? { tls: { port: this.o.tls.port, pemPath: this.files.pem } } : {}),
      sandboxDomain: this.o.sandboxDomain,
      fallbackPort: this.o.fallbackPort,
      fallbackSecret: this.o.fallbackSecret,
      socketPath: this.files.socketPath,
      sandboxMapPath: this.files.sandboxMapPath,
      nodeMapPath: this.files.nodeMapPath,
      directMapPath: this.files.directMapPath,
      ...(user ? { user } : {}),
    };
    writeFileSync(this.files.config, renderHaproxyConfig(input), { mode: 0o600 });
    if (this.o.tls) this.writePem(this.o.tls.cert, this.o.tls.key);
    // The check loads the maps too; launch() writes their real content.
    for (const path of [this.files.sandboxMapPath, this.files.nodeMapPath, this.files.directMapPath]) writeFileSync(path, '', { mode: 0o600 });
    const checked = await this.check();
    if (!checked.ok) {
      this.o.log.warn({ output: checked.output }, 'traffic proxy: haproxy refused its configuration; the Node server keeps the traffic port');
      return false;
    }
    const ok = await this.launch();
    this.supervising = ok;
    return ok;
  }

  /** A new certificate: HAProxy restarts with it (running connections are cut; renewals are rare). */
  async reloadCert(cert: Buffer, key: Buffer): Promise<void> {
    if (!this.o.tls) return;
    this.o.tls = { ...this.o.tls, cert, key };
    this.writePem(cert, key);
    // A restart asked for is no failure: it comes back at once, and renewals never add up to giving up.
    this.failedStarts = 0;
    await this.kill('SIGTERM');
  }

  /** HAProxy's PEM: the certificate chain, then the key. */
  private writePem(cert: Buffer, key: Buffer): void {
    writeFileSync(this.files.pem, Buffer.concat([cert, Buffer.from('\n'), key]), { mode: 0o600 });
  }

  /** Stop for good: soft stop (no new connections, running ones finish) for `graceMs`, then terminate. */
  async stop(graceMs = 0): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    this.o.routes.detach();
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      if (graceMs > 0) {
        child.kill('SIGUSR1');
        await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs).unref())]);
      }
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(killTimer);
    }
    rmSync(this.files.pid, { force: true });
  }

  /** Kill the running HAProxy and wait for its exit (the exit handler restarts it). */
  private async kill(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(signal);
    await exited;
  }

  private check(): Promise<{ ok: boolean; output: string }> {
    return new Promise((resolve) => {
      execFile(this.o.binary, ['-c', '-f', this.files.config], { timeout: 10_000, maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
        resolve({ ok: !err, output: `${stdout}${stderr}`.slice(0, 2000) || String(err ?? '') });
      });
    });
  }

  private async launch(): Promise<boolean> {
    const { sandboxMap, nodeMap, directMap } = this.o.routes.render();
    writeFileSync(this.files.sandboxMapPath, sandboxMap, { mode: 0o600 });
    writeFileSync(this.files.nodeMapPath, nodeMap, { mode: 0o600 });
    writeFileSync(this.files.directMapPath, directMap, { mode: 0o600 });
    rmSync(this.files.socketPath, { force: true });
    const startedAt = Date.now();
    const child = spawn(this.o.binary, ['-db', '-f', this.files.config], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const spawned = await new Promise<boolean>((resolve) => {
      child.once('spawn', () => resolve(true));
      child.once('error', (err) => {
        this.o.log.warn({ err }, 'traffic proxy: haproxy did not start');
        resolve(false);
      });
    });
    if (!spawned) return this.failed();
    if (child.pid !== undefined) writeFileSync(this.files.pid, `${child.pid}\n`, { mode: 0o600 });
    // An edge that exits without stop() (an uncaught error) takes its HAProxy along; after a SIGKILL the next
    // start finds it by the pid file.
    const killOnExit = (): void => {
      child.kill('SIGKILL');
    };
    process.once('exit', killOnExit);
    child.once('exit', () => process.removeListener('exit', killOnExit));
    let lines = 0;
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream! }).on('line', (line) => {
        if (lines++ < MAX_LOG_LINES) this.o.log.warn({ haproxy: line.slice(0, 500) }, 'traffic proxy: haproxy says');
      });
    }
    let live = false;
    child.once('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      this.o.routes.detach();
      // One that never became ready is the launch's failure, handled by its caller.
      if (this.stopping || !this.supervising || !live) return;
      this.o.log.warn({ code, signal }, 'traffic proxy: haproxy exited; restarting it');
      if (Date.now() - startedAt >= STABLE_AFTER_MS) this.failedStarts = 0;
      this.scheduleRestart();
    });
    if (!(await this.ready(child))) {
      await this.kill('SIGKILL');
      return false;
    }
    live = true;
    this.o.routes.goLive();
    this.o.log.info({ pid: child.pid, port: this.o.port, tlsPort: this.o.tls?.port ?? 'off' }, 'traffic proxy: haproxy serving the traffic port');
    return true;
  }

  private failed(): boolean {
    this.child = undefined;
    return false;
  }

  private async ready(child: ChildProcess): Promise<boolean> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      try {
        if ((await runtimeCommand(this.files.socketPath, ['show info'], 1_000)).includes('Name: HAProxy')) return true;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  private scheduleRestart(): void {
    if (this.stopping || this.gaveUp) return;
    if (this.failedStarts >= MAX_FAILED_STARTS) {
      this.gaveUp = true;
      this.o.log.error('traffic proxy: haproxy keeps failing; the Node server takes the traffic port back');
      this.o.onGiveUp();
      return;
    }
    const delay = BACKOFF_MS[Math.min(this.failedStarts, BACKOFF_MS.length - 1)] ?? 0;
    this.failedStarts++;
    this.timer = setTimeout(() => {
      if (this.stopping) return;
      void this.launch().then((ok) => {
        if (!ok) this.scheduleRestart();
      });
    }, delay);
  }

  /** An HAProxy left by an edge that died without stopping it holds the port: end it (only if it is ours). */
  private async killStale(): Promise<void> {
    let pid: number;
    try {
      pid = Number(readFileSync(this.files.pid, 'utf8').trim());
    } catch {
      return;
    }
    if (!Number.isInteger(pid) || pid <= 1) return;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmdline.includes('haproxy') || !cmdline.includes(this.files.config)) return;
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    for (let i = 0; i < 250 && existsSync(`/proc/${pid}`); i++) {
      // A killed process that is not our child lingers only until its parent (init) reaps it.
      let state: string | undefined;
      try {
        state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2];
      } catch {
        break;
      }
      if (state === 'Z') break;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
