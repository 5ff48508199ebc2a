import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { EnvdError } from '../errors.js';
import type { LaunchSpec } from './launch-spec.js';
import { raisedLaunch, raiseChild } from './oom-score.js';

/** How a child ended, in E2B's terms (Go's ProcessState). */
export interface ChildExit {
  exitCode: number;
  exited: boolean;
  status: string;
}

/** Output and lifecycle callbacks of one child. */
export interface ChildSink {
  stdout(data: Buffer): void;
  stderr(data: Buffer): void;
  pty(data: Buffer): void;
  exit(result: ChildExit): void;
}

/** A running child, pipes or PTY. */
export interface ChildHandle {
  readonly pid: number;
  readonly isPty: boolean;
  writeInput(data: Buffer): void;
  /** Returns false when stdin cannot be closed (PTY). */
  closeInput(): boolean;
  signal(sig: NodeJS.Signals): void;
  resize(cols: number, rows: number): void;
  /** Stops reading output (backpressure from a slow stream consumer). */
  pause(): void;
  resume(): void;
}

// Go's signal strings, which E2B puts in `status` ("signal: killed").
const SIGNAL_TEXT: Record<string, string> = {
  SIGHUP: 'hangup', SIGINT: 'interrupt', SIGQUIT: 'quit', SIGILL: 'illegal instruction', SIGTRAP: 'trace/breakpoint trap',
  SIGABRT: 'aborted', SIGBUS: 'bus error', SIGFPE: 'floating point exception', SIGKILL: 'killed',
  SIGUSR1: 'user defined signal 1', SIGSEGV: 'segmentation fault', SIGUSR2: 'user defined signal 2',
  SIGPIPE: 'broken pipe', SIGALRM: 'alarm clock', SIGTERM: 'terminated',
};
const SIGNAL_NAMES: Record<number, string> = {
  1: 'SIGHUP', 2: 'SIGINT', 3: 'SIGQUIT', 4: 'SIGILL', 5: 'SIGTRAP', 6: 'SIGABRT', 7: 'SIGBUS', 8: 'SIGFPE',
  9: 'SIGKILL', 10: 'SIGUSR1', 11: 'SIGSEGV', 12: 'SIGUSR2', 13: 'SIGPIPE', 14: 'SIGALRM', 15: 'SIGTERM',
};

function exitOf(code: number | null, signal: string | null): ChildExit {
  if (code !== null) return { exitCode: code, exited: true, status: `exit status ${code}` };
  const text = signal ? (SIGNAL_TEXT[signal] ?? signal) : 'unknown';
  return { exitCode: -1, exited: false, status: `signal: ${text}` };
}

/** Signals the child's process group (each child leads its own), falling back to the pid. */
function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

/** After exit, wait this long for buffered pipe output before ending (a grandchild may hold the pipe). */
const PIPE_DRAIN_MS = 250;

/** Spawns with plain pipes; resolves once the child has a pid. */
export function spawnPipes(spec: LaunchSpec, stdin: boolean, sink: ChildSink): Promise<ChildHandle> {
  return new Promise((resolve, reject) => {
    const launch = raisedLaunch(spec.file, spec.args);
    const child = spawn(launch.file, launch.args, {
      cwd: spec.cwd,
      env: spec.env,
      uid: spec.uid,
      gid: spec.gid,
      detached: true,
      stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    let started = false;
    child.once('error', (err) => {
      if (!started) reject(new EnvdError('internal', `failed to start process: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err }));
    });
    if (child.pid === undefined) return;
    started = true;
    const pid = child.pid;
    if (!launch.raised) raiseChild(pid);
    child.stdout!.on('data', (d: Buffer) => sink.stdout(d));
    child.stderr!.on('data', (d: Buffer) => sink.stderr(d));
    child.stdin?.on('error', () => undefined);
    let exitResult: ChildExit | undefined;
    let finished = false;
    const finish = (): void => {
      if (finished || !exitResult) return;
      finished = true;
      sink.exit(exitResult);
    };
    child.once('exit', (code, signal) => {
      exitResult = exitOf(code, signal);
      const t = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish();
      }, PIPE_DRAIN_MS);
      t.unref();
    });
    child.once('close', () => finish());
    resolve({
      pid,
      isPty: false,
      writeInput(data) {
        if (!child.stdin || child.stdin.destroyed || child.stdin.writableEnded) {
          throw new EnvdError('failed_precondition', 'stdin of the process is closed or was not enabled');
        }
        child.stdin.write(data);
      },
      closeInput() {
        if (!child.stdin) throw new EnvdError('failed_precondition', 'stdin was not enabled for the process');
        child.stdin.end();
        return true;
      },
      signal: (sig) => signalGroup(pid, sig),
      resize() {
        throw new EnvdError('invalid_argument', 'process was not started with a PTY');
      },
      pause() {
        child.stdout?.pause();
        child.stderr?.pause();
      },
      resume() {
        child.stdout?.resume();
        child.stderr?.resume();
      },
    });
  });
}

interface PtyModule {
  spawn(
    file: string,
    args: string[],
    opt: { name: string; cols: number; rows: number; cwd: string; env: Record<string, string>; encoding: null; uid?: number; gid?: number },
  ): {
    pid: number;
    onData(cb: (d: Buffer | string) => void): void;
    onExit(cb: (e: { exitCode: number; signal?: number }) => void): void;
    write(d: Buffer | string): void;
    resize(cols: number, rows: number): void;
    pause(): void;
    resume(): void;
  };
}

let ptyModule: PtyModule | undefined;

/** node-pty is loaded on first PTY: idle envd does not carry it. */
function loadPty(): PtyModule {
  ptyModule ??= createRequire(import.meta.url)('node-pty') as PtyModule;
  return ptyModule;
}

/** Spawns on a new PTY (node-pty's forkpty makes the child a session leader). */
export function spawnPty(spec: LaunchSpec, size: { cols: number; rows: number }, sink: ChildSink): ChildHandle {
  const pty = loadPty();
  const cols = Math.min(Math.max(size.cols || 80, 1), 10_000);
  const rows = Math.min(Math.max(size.rows || 24, 1), 10_000);
  const launch = raisedLaunch(spec.file, spec.args);
  let term: ReturnType<PtyModule['spawn']>;
  try {
    term = pty.spawn(launch.file, launch.args, {
      name: spec.env.TERM ?? 'xterm-256color',
      cols,
      rows,
      cwd: spec.cwd,
      env: spec.env,
      encoding: null,
      uid: spec.uid,
      gid: spec.gid,
    });
  } catch (err) {
    throw new EnvdError('internal', 'failed to start PTY process', { cause: err });
  }
  const pid = term.pid;
  if (!launch.raised) raiseChild(pid);
  let exited = false;
  term.onData((d) => sink.pty(typeof d === 'string' ? Buffer.from(d) : d));
  term.onExit(({ exitCode, signal }) => {
    exited = true;
    const name = signal ? SIGNAL_NAMES[signal] ?? `signal ${signal}` : null;
    sink.exit(signal ? exitOf(null, name) : exitOf(exitCode, null));
  });
  return {
    pid,
    isPty: true,
    writeInput(data) {
      if (exited) throw new EnvdError('failed_precondition', 'process has exited');
      term.write(data);
    },
    closeInput() {
      return false;
    },
    signal: (sig) => signalGroup(pid, sig),
    pause: () => term.pause(),
    resume: () => term.resume(),
    resize(c, r) {
      if (exited) return;
      term.resize(Math.min(Math.max(c, 1), 10_000), Math.min(Math.max(r, 1), 10_000));
    },
  };
}
