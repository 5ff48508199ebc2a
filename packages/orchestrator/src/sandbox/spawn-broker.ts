// Host tools started from a small helper process instead of the orchestrator itself. Node forks on its main
// thread, and a fork copies the parent's page tables: from the orchestrator (150-175 MiB) each spawn stopped the
// event loop for several milliseconds, ~25 of them per warm-slot boot and teardown, while Creates and the node
// proxy's traffic waited behind them (docs/performance.md, "Spawns off the orchestrator's event loop"). The
// broker is one long-lived Node child spoken to over its IPC channel; it is started on first use and again after
// it dies. A request in flight when it dies fails (its tool may or may not have run, as when a spawn fails), and
// is never sent twice: not every host tool is idempotent.

import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface BrokerRequest {
  id: number;
  cmd: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  input?: string;
  nullStdio?: boolean;
}

export type BrokerReply =
  | { id: number; code: number | null; stdout: string; stderr: string }
  | { id: number; error: { message: string; code?: string; errno?: number; syscall?: string; path?: string } };

export interface BrokerResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Pending {
  resolve(r: BrokerResult): void;
  reject(e: Error): void;
}

const CHILD = fileURLToPath(new URL('./spawn-broker-child.js', import.meta.url));

/** The broker failed, not the tool: it could not be started or died with the request in flight. */
export class SpawnBrokerFailed extends Error {
  readonly code = 'spawn_broker_failed';
  constructor(message: string) {
    super(message);
    this.name = 'SpawnBrokerFailed';
  }
}

export class SpawnBroker {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** How many broker processes were started (tests check a dead one is replaced). */
  starts = 0;

  run(req: Omit<BrokerRequest, 'id'>): Promise<BrokerResult> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const child = this.child ?? this.start();
      this.pending.set(id, { resolve, reject });
      this.holdLoop(true);
      child.send({ ...req, id } satisfies BrokerRequest, (err) => {
        if (err) this.settle(id, new SpawnBrokerFailed(`cannot reach the spawn broker: ${err.message}`));
      });
    });
  }

  /** The broker's pid (tests), or undefined while none runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private start(): ChildProcess {
    this.starts++;
    // A small heap (it holds only the output of tools in flight), and none of the orchestrator's environment:
    // every tool gets its environment from the request.
    const child = fork(CHILD, [], { execArgv: ['--max-old-space-size=64'], env: {}, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.child = child;
    child.on('message', (msg: BrokerReply) => this.onReply(msg));
    child.on('error', (err) => this.died(child, `the spawn broker failed: ${err.message}`));
    child.on('exit', (code, signal) => this.died(child, `the spawn broker exited (${signal ?? code})`));
    return child;
  }

  private onReply(msg: BrokerReply): void {
    if ('error' in msg) {
      const err = Object.assign(new Error(msg.error.message), {
        code: msg.error.code,
        errno: msg.error.errno,
        syscall: msg.error.syscall,
        path: msg.error.path,
      });
      this.settle(msg.id, err);
    } else {
      this.settle(msg.id, undefined, { code: msg.code, stdout: msg.stdout, stderr: msg.stderr });
    }
  }

  private settle(id: number, err?: Error, result?: BrokerResult): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (this.pending.size === 0) this.holdLoop(false);
    if (err) p.reject(err);
    else p.resolve(result!);
  }

  private died(child: ChildProcess, why: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    for (const id of [...this.pending.keys()]) this.settle(id, new SpawnBrokerFailed(why));
  }

  /** While a request waits, the broker keeps the event loop alive; an idle broker must not. */
  private holdLoop(hold: boolean): void {
    const c = this.child;
    if (!c) return;
    const channel = c.channel as { ref?: () => void; unref?: () => void } | undefined;
    if (hold) {
      c.ref();
      channel?.ref?.();
    } else {
      c.unref();
      channel?.unref?.();
    }
  }
}
