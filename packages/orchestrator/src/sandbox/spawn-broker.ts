// Host tools started from a small helper process instead of the orchestrator itself. Node forks on its main
// thread, and a fork copies the parent's page tables: from the orchestrator (150-175 MiB) each spawn stopped the
// event loop for several milliseconds, ~25 of them per warm-slot boot and teardown, while Creates and the node
// proxy's traffic waited behind them (docs/performance.md, "Spawns off the orchestrator's event loop"). The broker
// is native (native/spawn-broker.c): a Node one spent ~4.4 ms of CPU of its own on every tool (its fork and
// bookkeeping), ~90 ms of every create → command → kill cycle (docs/performance.md, "A native spawn broker").
// It is one long-lived process spoken to over its stdin/stdout in frames, started on first use and again after it
// dies. A request in flight when it dies fails (its tool may or may not have run, as when a spawn fails), and is
// never sent twice: not every host tool is idempotent.

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { FrameReader } from './length-frames.js';

export interface BrokerRequest {
  cmd: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  input?: string;
  nullStdio?: boolean;
}

export interface BrokerResult {
  /** null when a signal ended the tool. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** dist/src/sandbox/spawn-broker.js → dist/native/spawn-broker (built by `npm run build:native`). */
const DEFAULT_BROKER = fileURLToPath(new URL('../../native/spawn-broker', import.meta.url));

/** The broker's bounds (MAX_REQUEST, MAX_OUTPUT in spawn-broker.c). */
const MAX_REQUEST = 32 << 20;
const MAX_OUTPUT = 32 << 20;
/** The largest reply: ID KIND VALUE, and both outputs with their lengths. */
const MAX_REPLY = 20 + 2 * MAX_OUTPUT;
const KIND = { exited: 0, signalled: 1, spawnFailed: 2, tooMuchOutput: 3 } as const;

/** The broker failed, not the tool: it could not be started or died with the request in flight. */
export class SpawnBrokerFailed extends Error {
  readonly code = 'spawn_broker_failed';
  constructor(message: string) {
    super(message);
    this.name = 'SpawnBrokerFailed';
  }
}

/** A tool wrote more than the broker keeps; it was killed. */
export class ToolOutputTooLarge extends Error {
  readonly code = 'tool_output_too_large';
  constructor(cmd: string) {
    super(`${cmd} wrote more than ${MAX_OUTPUT} bytes to stdout or stderr; it was stopped`);
    this.name = 'ToolOutputTooLarge';
  }
}

interface Pending {
  cmd: string;
  resolve(r: BrokerResult): void;
  reject(e: Error): void;
}

export class SpawnBroker {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly frames = new FrameReader();
  /** How many broker processes were started (tests check a dead one is replaced). */
  starts = 0;

  constructor(private readonly binary: string = DEFAULT_BROKER) {}

  run(req: BrokerRequest): Promise<BrokerResult> {
    let body: Buffer;
    try {
      body = encode(req);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (body.length + 8 > MAX_REQUEST) return Promise.reject(new SpawnBrokerFailed(`a request of more than ${MAX_REQUEST} bytes (${req.cmd})`));
    return new Promise((resolve, reject) => {
      const id = this.nextId;
      this.nextId = (this.nextId % 0xffff_fffe) + 1;
      const child = this.child ?? this.start();
      this.pending.set(id, { cmd: req.cmd, resolve, reject });
      this.holdLoop(true);
      const head = Buffer.alloc(8);
      head.writeUInt32LE(4 + body.length, 0);
      head.writeUInt32LE(id, 4);
      child.stdin!.write(Buffer.concat([head, body]));
    });
  }

  /** The broker's pid (tests), or undefined while none runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private start(): ChildProcess {
    this.starts++;
    // None of the orchestrator's environment: every tool gets its environment from the request.
    const child = spawn(this.binary, ['serve'], { env: {}, cwd: '/', stdio: ['pipe', 'pipe', 'inherit'] });
    this.child = child;
    this.frames.reset();
    child.stdout!.on('data', (c: Buffer) => this.onData(child, c));
    child.stdin!.on('error', () => undefined); // a dead broker closes the pipe; its exit says the rest
    child.on('error', (err) => this.died(child, `the spawn broker failed: ${err.message}`));
    child.on('exit', (code, signal) => this.died(child, `the spawn broker exited (${signal ?? code})`));
    return child;
  }

  private onData(child: ChildProcess, chunk: Buffer): void {
    if (child !== this.child) return;
    const accept = (len: number): boolean => {
      if (len >= 20 && len <= MAX_REPLY) return true;
      this.kill(`the spawn broker sent a ${len}-byte frame`);
      return false;
    };
    this.frames.push(chunk, accept, (body) => {
      if (this.onReply(body)) return true;
      this.kill('the spawn broker sent a reply it was not asked for');
      return false;
    });
  }

  private onReply(body: Buffer): boolean {
    const id = body.readUInt32LE(0);
    const kind = body.readUInt32LE(4);
    const value = body.readUInt32LE(8);
    const outLen = body.readUInt32LE(12);
    if (16 + outLen + 4 > body.length) return false;
    const errLen = body.readUInt32LE(16 + outLen);
    if (20 + outLen + errLen !== body.length) return false;
    const p = this.pending.get(id);
    if (!p) return false;
    const stdout = body.toString('utf8', 16, 16 + outLen);
    const stderr = body.toString('utf8', 20 + outLen);
    this.settle(id);
    if (kind === KIND.exited) p.resolve({ code: value, stdout, stderr });
    else if (kind === KIND.signalled) p.resolve({ code: null, stdout, stderr });
    else if (kind === KIND.tooMuchOutput) p.reject(new ToolOutputTooLarge(p.cmd));
    else {
      // As Node's own spawn reports it: code ENOENT, errno -2, syscall "spawn <cmd>".
      const err: NodeJS.ErrnoException = new Error(`spawn ${p.cmd} ${stdout}`);
      Object.assign(err, { code: stdout, errno: -value, syscall: `spawn ${p.cmd}`, path: p.cmd });
      p.reject(err);
    }
    return true;
  }

  private settle(id: number): void {
    this.pending.delete(id);
    if (this.pending.size === 0) this.holdLoop(false);
  }

  private kill(why: string): void {
    const child = this.child;
    if (!child) return;
    child.kill('SIGKILL');
    this.died(child, why);
  }

  private died(child: ChildProcess, why: string): void {
    if (this.child !== child) return;
    this.child = undefined;
    child.stdin?.destroy();
    child.stdout?.destroy();
    for (const [id, p] of [...this.pending]) {
      this.settle(id);
      p.reject(new SpawnBrokerFailed(why));
    }
  }

  /** While a request waits, the broker keeps the event loop alive; an idle broker must not. */
  private holdLoop(hold: boolean): void {
    const c = this.child;
    if (!c) return;
    for (const s of [c.stdin, c.stdout] as Array<{ ref?: () => void; unref?: () => void } | null>) {
      if (hold) s?.ref?.();
      else s?.unref?.();
    }
    if (hold) c.ref();
    else c.unref();
  }
}

/** FLAGS CMD CWD ARGC ARG... ENVC ENV... INPUT (spawn-broker.c). */
function encode(req: BrokerRequest): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number): void => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0, 0);
    parts.push(b);
  };
  const str = (s: string): void => {
    const b = Buffer.from(s, 'utf8');
    u32(b.length);
    parts.push(b);
  };
  for (const s of [req.cmd, req.cwd ?? '', ...req.args, ...Object.entries(req.env).flat()]) {
    // What execve cannot carry fails here, as Node's spawn refuses it.
    if (s.includes('\0')) throw Object.assign(new TypeError(`a NUL byte in an argument of ${JSON.stringify(req.cmd)}`), { code: 'ERR_INVALID_ARG_VALUE' });
  }
  u32(req.nullStdio ? 1 : 0);
  str(req.cmd);
  str(req.cwd ?? '');
  u32(req.args.length);
  for (const a of req.args) str(a);
  const env = Object.entries(req.env);
  u32(env.length);
  for (const [k, v] of env) str(`${k}=${v}`);
  str(req.nullStdio ? '' : (req.input ?? ''));
  return Buffer.concat(parts);
}
