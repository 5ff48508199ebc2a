import { create } from '@bufbuild/protobuf';
import {
  ProcessConfigSchema,
  ProcessEventSchema,
  type ProcessConfig,
  type ProcessEvent,
  type ProcessSelector,
} from '@cove/contracts/envd/process';
import { EnvdError } from '../errors.js';
import { EventQueue } from '../stream/event-queue.js';
import { spawnPipes, spawnPty, type ChildHandle, type ChildSink } from './child-handle.js';
import type { LogRing } from '../log-ring.js';
import type { LaunchSpec } from './launch-spec.js';

/** A process started through envd, while it runs. */
/**
 * Output events a stream may have queued before the child's output is paused; keeps
 * envd's heap bounded when a client reads slower than the process writes (~64 KiB each).
 */
const HIGH_WATER_EVENTS = 128;

export class ManagedProcess {
  readonly subscribers = new Set<EventQueue<ProcessEvent>>();
  child!: ChildHandle;
  private paused = false;
  private readonly exitHooks: (() => void)[] = [];

  /** Runs `fn` once the process has ended. */
  onExit(fn: () => void): void {
    this.exitHooks.push(fn);
  }

  /** @internal called by the table when the child ends. */
  ended(): void {
    for (const fn of this.exitHooks.splice(0)) fn();
  }

  constructor(
    readonly config: ProcessConfig,
    readonly tag: string | undefined,
  ) {}

  get pid(): number {
    return this.child.pid;
  }

  /** A new subscriber sees only what happens from now on (Connect replays nothing). */
  subscribe(): EventQueue<ProcessEvent> {
    const q = new EventQueue<ProcessEvent>();
    q.onDrained = () => this.maybeResume();
    this.subscribers.add(q);
    return q;
  }

  unsubscribe(q: EventQueue<ProcessEvent>): void {
    this.subscribers.delete(q);
    this.maybeResume();
  }

  broadcast(event: ProcessEvent): void {
    let full = false;
    for (const q of this.subscribers) {
      q.push(event);
      if (q.length > HIGH_WATER_EVENTS) full = true;
    }
    if (full && !this.paused && event.event.case === 'data') {
      this.paused = true;
      this.child.pause();
    }
  }

  private maybeResume(): void {
    if (!this.paused) return;
    for (const q of this.subscribers) if (q.length > HIGH_WATER_EVENTS / 2) return;
    this.paused = false;
    this.child.resume();
  }
}

export interface StartOptions {
  spec: LaunchSpec;
  config: ProcessConfig;
  tag: string | undefined;
  stdin: boolean;
  pty: { cols: number; rows: number } | undefined;
  /** Name of the user the process runs as (for the log). */
  user?: string;
}

/** Running processes by pid; a finished process is dropped as soon as its end event is sent. */
export class ProcessTable {
  private readonly byPid = new Map<number, ManagedProcess>();

  constructor(private readonly ring?: LogRing) {}

  /**
   * Spawns and registers a process. The returned queue is subscribed before any output
   * can arrive, so the caller's stream sees everything after its start event.
   */
  async start(opts: StartOptions): Promise<{ proc: ManagedProcess; queue: EventQueue<ProcessEvent> }> {
    const proc = new ManagedProcess(
      create(ProcessConfigSchema, { cmd: opts.config.cmd, args: opts.config.args, envs: opts.config.envs, cwd: opts.spec.cwd }),
      opts.tag,
    );
    const queue = proc.subscribe();
    const data = (c: 'stdout' | 'stderr' | 'pty') => (d: Buffer) =>
      proc.broadcast(create(ProcessEventSchema, { event: { case: 'data', value: { output: { case: c, value: new Uint8Array(d) } } } }));
    const sink: ChildSink = {
      stdout: data('stdout'),
      stderr: data('stderr'),
      pty: data('pty'),
      exit: (r) => {
        this.byPid.delete(proc.pid);
        this.ring?.record(r.exited && r.exitCode === 0 ? 'info' : 'warn', 'process ended', {
          pid: proc.pid,
          tag: opts.tag,
          cmd: opts.config.cmd,
          exitCode: r.exitCode,
          exited: r.exited,
          status: r.status,
          durationMs: Date.now() - startedAt,
        });
        const end = create(ProcessEventSchema, {
          event: {
            case: 'end',
            value: { exitCode: r.exitCode, exited: r.exited, status: r.status, error: r.exitCode === 0 && r.exited ? undefined : r.status },
          },
        });
        for (const q of proc.subscribers) {
          q.push(end);
          q.end();
        }
        proc.subscribers.clear();
        proc.ended();
      },
    };
    const startedAt = Date.now();
    try {
      proc.child = opts.pty ? spawnPty(opts.spec, opts.pty, sink) : await spawnPipes(opts.spec, opts.stdin, sink);
    } catch (e) {
      this.ring?.record('error', 'process start failed', { cmd: opts.config.cmd, cwd: opts.spec.cwd, user: opts.user, error: e instanceof Error ? e.message : String(e) });
      throw e;
    }
    this.byPid.set(proc.pid, proc);
    this.ring?.record('info', 'process started', {
      pid: proc.pid,
      tag: opts.tag,
      cmd: opts.config.cmd,
      args: JSON.stringify(opts.config.args),
      cwd: opts.spec.cwd,
      user: opts.user,
      pty: opts.pty !== undefined,
    });
    return { proc, queue };
  }

  /** Finds a running process by pid or tag; not_found otherwise. */
  get(selector: ProcessSelector | undefined): ManagedProcess {
    const s = selector?.selector;
    if (s?.case === 'pid') {
      const p = this.byPid.get(s.value);
      if (p) return p;
      throw new EnvdError('not_found', `process with pid ${s.value} not found`);
    }
    if (s?.case === 'tag') {
      for (const p of this.byPid.values()) if (p.tag === s.value) return p;
      throw new EnvdError('not_found', `process with tag "${s.value}" not found`);
    }
    throw new EnvdError('invalid_argument', 'process selector (pid or tag) is required');
  }

  list(): ManagedProcess[] {
    return [...this.byPid.values()];
  }

  /** Kills every child (envd shutdown). */
  killAll(): void {
    for (const p of this.byPid.values()) p.child.signal('SIGKILL');
  }
}
