// What a sandbox controls, touched from the host through the native tenant-fs helper (native/tenant-fs.c):
// files inside its trees (a slot's rootfs, a built layer), where every lookup below the tree's root refuses
// links and mount crossings in the kernel (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS), so nothing a tenant
// planted can point host root at a host file; and the hostname of its UTS namespace. Node's own fs must never
// be given a path inside such a tree.
//
// The helper is one long-lived process per orchestrator, spoken to over its stdin/stdout in frames: a claim
// must not fork the orchestrator (Node forks on its main thread, at a cost that grows with the heap: ~3.6 ms
// per spawn at 150 MiB, and a burst of claims queues them). It is started on first use, restarted when it dies
// (requests it had not answered are sent once more to the new one: every request is idempotent), killed when
// a request outlives its deadline or when it sends a frame larger than the request allows.

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { FrameReader } from './length-frames.js';

/** dist/src/sandbox/tenant-fs.js → dist/native/tenant-fs (built by `npm run build:native`). */
const DEFAULT_HELPER = fileURLToPath(new URL('../../native/tenant-fs', import.meta.url));

/** The helper's reply codes (see native/tenant-fs.c). */
const CODE = { ok: 0, absent: 3, notPlain: 4, tooBig: 5, gone: 6, noNft: 7 } as const;
const OP = { put: 1, get: 2, hostname: 3, nft: 4 } as const;
/** The helper's own bounds (MAX_REQUEST, MAX_GET, MAX_FILE in tenant-fs.c). */
const MAX_REQUEST = 32 << 20;
const MAX_GET = 16 << 20;
const MAX_FILE = 16 << 20;
/** A reply's message and framing on top of its data (the helper's message is at most 1 KiB). */
const REPLY_OVERHEAD = 2048;
/** How long one request may take before the helper is deemed stuck and killed. */
const REQUEST_TIMEOUT_MS = 15_000;

export type TenantFsErrorCode =
  | 'tenant_fs_absent'
  | 'tenant_fs_not_plain'
  | 'tenant_fs_too_big'
  | 'tenant_fs_process_gone'
  | 'tenant_fs_nft_unavailable'
  | 'tenant_fs_failed';

export class TenantFsError extends Error {
  constructor(
    readonly code: TenantFsErrorCode,
    readonly path: string,
    detail: string,
  ) {
    super(`${path}: ${detail}`);
    this.name = 'TenantFsError';
  }
}

function codeOf(code: number): TenantFsErrorCode {
  if (code === CODE.absent) return 'tenant_fs_absent';
  if (code === CODE.notPlain) return 'tenant_fs_not_plain';
  if (code === CODE.tooBig) return 'tenant_fs_too_big';
  if (code === CODE.gone) return 'tenant_fs_process_gone';
  if (code === CODE.noNft) return 'tenant_fs_nft_unavailable';
  return 'tenant_fs_failed';
}

interface Pending {
  id: number;
  body: Buffer;
  /** The largest reply body this request may get (its data bound plus the message). */
  maxReply: number;
  what: string;
  attempts: number;
  timer: NodeJS.Timeout;
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
}

/** One helper process and the requests it has not answered yet. */
export class TenantFsHelper {
  private child: ChildProcess | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly frames = new FrameReader();
  private stopped = false;
  private startedAt = 0;
  /** Spawns so far (a figure for tests and the bench: one per helper life, none per request). */
  spawns = 0;

  constructor(
    private readonly binary: string = DEFAULT_HELPER,
    private readonly timeoutMs: number = REQUEST_TIMEOUT_MS,
  ) {}

  /** The helper's pid, or null when none is running. */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  request(op: number, payload: Buffer, maxData: number, what: string): Promise<Buffer> {
    if (this.stopped) return Promise.reject(new TenantFsError('tenant_fs_failed', what, 'the tenant-fs helper is stopped'));
    if (8 + payload.length > MAX_REQUEST) return Promise.reject(new TenantFsError('tenant_fs_too_big', what, `a request of more than ${MAX_REQUEST} bytes`));
    return new Promise((resolve, reject) => {
      const id = this.nextId;
      this.nextId = (this.nextId % 0xffff_fffe) + 1;
      const head = Buffer.alloc(12);
      head.writeUInt32LE(8 + payload.length, 0);
      head.writeUInt32LE(id, 4);
      head.writeUInt32LE(op, 8);
      const p: Pending = {
        id,
        body: Buffer.concat([head, payload]),
        maxReply: 12 + REPLY_OVERHEAD + maxData,
        what,
        attempts: 0,
        timer: setTimeout(() => this.fail(`a request (${what}) took longer than ${this.timeoutMs} ms`, p), this.timeoutMs),
        resolve,
        reject,
      };
      this.pending.set(id, p);
      this.send(p);
    });
  }

  /** Ends the helper (it exits when its stdin closes); later requests fail. For shutdown and tests. */
  stop(): void {
    this.stopped = true;
    this.fail('the tenant-fs helper was stopped');
  }

  private send(p: Pending): void {
    p.attempts++;
    const child = this.child ?? this.start();
    this.holdLoop(true);
    child.stdin!.write(p.body);
  }

  private start(): ChildProcess {
    this.spawns++;
    const child = spawn(this.binary, ['serve'], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    this.child = child;
    this.startedAt = Date.now();
    this.frames.reset();
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => this.onData(child, c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => {
      if (stderr.length < 2048) stderr += c;
    });
    child.stdin!.on('error', () => undefined); // a dead helper closes the pipe; its exit says the rest
    child.on('error', (err) => this.died(child, `cannot run the tenant-fs helper: ${err.message}`));
    child.on('exit', (code, signal) => this.died(child, `the tenant-fs helper exited (${signal ?? code})${stderr ? `: ${stderr.trim()}` : ''}`));
    return child;
  }

  /** While a request waits, the helper's pipes keep the event loop alive; an idle helper must not. */
  private holdLoop(hold: boolean): void {
    const c = this.child;
    if (!c) return;
    for (const s of [c.stdin, c.stdout, c.stderr] as Array<{ ref?: () => void; unref?: () => void } | null>) {
      if (hold) s?.ref?.();
      else s?.unref?.();
    }
    if (hold) c.ref();
    else c.unref();
  }

  private onData(child: ChildProcess, chunk: Buffer): void {
    if (child !== this.child) return;
    // Replies come in request order; the bound is the oldest request's, checked before any body is kept.
    let next: Pending | undefined;
    const accept = (len: number): boolean => {
      next = this.pending.values().next().value as Pending | undefined;
      if (next && len >= 12 && len <= next.maxReply) return true;
      this.fail(`the tenant-fs helper sent a ${len}-byte frame${next ? ` (at most ${next.maxReply} allowed)` : ' unasked'}`);
      return false;
    };
    this.frames.push(chunk, accept, (body) => {
      const id = body.readUInt32LE(0);
      const code = body.readUInt32LE(4);
      const mlen = body.readUInt32LE(8);
      const p = this.pending.get(id);
      if (!p || p !== next || mlen > body.length - 12) {
        this.fail(`the tenant-fs helper answered out of order`);
        return false;
      }
      this.settle(p);
      if (code === CODE.ok) p.resolve(Buffer.from(body.subarray(12 + mlen)));
      else p.reject(new TenantFsError(codeOf(code), p.what, body.subarray(12, 12 + mlen).toString('utf8') || `tenant-fs code ${code}`));
      return true;
    });
  }

  private settle(p: Pending): void {
    clearTimeout(p.timer);
    this.pending.delete(p.id);
    if (this.pending.size === 0) this.holdLoop(false);
  }

  /** Kills the helper; `culprit` (if any) fails, the others are sent again to a new helper. */
  private fail(reason: string, culprit?: Pending): void {
    const child = this.child;
    if (culprit) {
      this.settle(culprit);
      culprit.reject(new TenantFsError('tenant_fs_failed', culprit.what, reason));
    }
    if (child) {
      child.kill('SIGKILL');
      this.died(child, reason);
    } else this.retryOrFail(reason);
  }

  private died(child: ChildProcess, reason: string): void {
    if (child !== this.child) return;
    this.child = null;
    child.stdin?.destroy();
    child.stdout?.destroy();
    child.stderr?.destroy();
    this.retryOrFail(reason);
    // Restarted at once, so the next claim does not pay the spawn; not when it died young (a helper that cannot
    // start would loop): the next request starts it then.
    if (!this.child && !this.stopped && Date.now() - this.startedAt > 1000) {
      this.start();
      this.holdLoop(false);
    }
  }

  /** Requests the dead helper had not answered: each goes to the next helper once, then fails. */
  private retryOrFail(reason: string): void {
    for (const p of [...this.pending.values()]) {
      if (this.stopped || p.attempts >= 2) {
        this.settle(p);
        p.reject(new TenantFsError('tenant_fs_failed', p.what, reason));
      }
    }
    for (const p of this.pending.values()) this.send(p);
  }
}

let shared: TenantFsHelper | null = null;

/** The orchestrator's one helper (created on first use). */
export function tenantFsHelper(): TenantFsHelper {
  shared ??= new TenantFsHelper();
  return shared;
}

class Writer {
  private parts: Buffer[] = [];
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0, 0);
    this.parts.push(b);
    return this;
  }
  bytes(b: Buffer): this {
    this.u32(b.length);
    this.parts.push(b);
    return this;
  }
  str(s: string): this {
    return this.bytes(Buffer.from(s, 'utf8'));
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export interface TenantFile {
  /** Relative to the tree's root, e.g. `etc/hostname`. */
  path: string;
  content: string | Buffer;
}

/**
 * Writes each file as a new inode renamed over its path (a link standing there is replaced, not followed),
 * owned by uid:gid with `mode`. A missing parent directly below the root is created.
 */
export async function writeTenantFiles(root: string, uid: number, gid: number, mode: number, files: TenantFile[], helper = tenantFsHelper()): Promise<void> {
  const w = new Writer().str(root).u32(uid).u32(gid).u32(mode).u32(files.length);
  for (const f of files) {
    const body = typeof f.content === 'string' ? Buffer.from(f.content) : f.content;
    if (body.length > MAX_FILE) throw new TenantFsError('tenant_fs_too_big', f.path, `more than ${MAX_FILE} bytes`);
    w.str(relative(f.path)).bytes(body);
  }
  await helper.request(OP.put, w.done(), 0, files.map((f) => f.path).join(', '));
}

/**
 * A regular file's bytes (at most `maxBytes`), looked up without following any link. TenantFsError with
 * `tenant_fs_absent` when nothing is there, `tenant_fs_not_plain` for a link, device, FIFO or directory on the way.
 */
export async function readTenantFile(root: string, path: string, maxBytes: number, helper = tenantFsHelper()): Promise<Buffer> {
  if (!Number.isInteger(maxBytes) || maxBytes < 0 || maxBytes > MAX_GET) throw new TenantFsError('tenant_fs_failed', path, `a read bound of ${maxBytes} bytes`);
  return helper.request(OP.get, new Writer().str(root).str(relative(path)).u32(maxBytes).done(), maxBytes, path);
}

/**
 * Sets `hostname` in the UTS namespace of `pid`, provided `pid` still has `startTime` (field 22 of its
 * /proc stat) once the helper holds that namespace: a pid recycled by another process is never entered.
 * TenantFsError `tenant_fs_process_gone` otherwise.
 */
export async function setUtsHostname(pid: number, startTime: string, hostname: string, helper = tenantFsHelper()): Promise<void> {
  if (!Number.isInteger(pid) || pid <= 0 || !/^\d{1,20}$/.test(startTime) || !/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(hostname)) {
    throw new TenantFsError('tenant_fs_failed', `uts of ${pid}`, 'not a pid, start time and hostname');
  }
  await helper.request(OP.hostname, new Writer().u32(pid).str(startTime).str(hostname).done(), 0, `uts of ${pid}`);
}

/**
 * nftables commands (nft's own syntax) run by the helper through libnftables: a claim's change to the internet
 * set without an `nft` process. TenantFsError `tenant_fs_nft_unavailable` when the node lacks libnftables.so.1
 * (the caller then runs `nft`), `tenant_fs_failed` with nft's error when the commands fail.
 */
export async function runNftCommands(commands: string, helper = tenantFsHelper()): Promise<void> {
  await helper.request(OP.nft, new Writer().str(commands).done(), 0, 'nft');
}

function relative(path: string): string {
  const rel = path.replace(/^\/+/, '');
  if (rel === '' || rel.includes('\0') || rel.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new TenantFsError('tenant_fs_failed', path, 'not a plain relative path');
  }
  return rel;
}
