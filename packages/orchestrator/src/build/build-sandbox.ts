// One build sandbox: booted by the ordinary runtime on the layer stack so far (same isolation, seccomp and
// network policy as any sandbox, internet on), driven through envd like the SDK drives a sandbox: commands via
// process.Process/Start, files via POST /files. Its writable layer, exported by the runtime, becomes a layer.

import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createClient, type Client } from '@connectrpc/connect';
import { Process } from '@cove/contracts/envd/process';
import type { Logger } from 'pino';
import { request } from 'undici';
import { asUser, envdTransport, initEnvd, readCapped } from '../sandboxes/envd-init.js';
import { ENVD_ACCESS_TOKEN_HEADER, ENVD_PORT } from '@cove/contracts/sandbox';

/** What the build engine needs from the sandbox runtime (src/sandbox/runtime.ts). */
export interface BuildRuntime {
  builtinRootfs(templateId: string): Promise<string | null>;
  boot(opts: {
    templateId: string;
    layers: string[];
    diskMb: number;
    limits: { vcpu: number; memoryMb: number };
  }): Promise<{ slotId: string; address: string; initToken: string }>;
  claim(slotId: string, opts: { sandboxId: string; limits: { vcpu: number; memoryMb: number }; allowInternetAccess: boolean }): Promise<void>;
  exportUpper(slotId: string, destFile: string): Promise<{ bytes: number; sha256: string }>;
  destroy(slotId: string): Promise<void>;
}

export interface SandboxOptions {
  /** Lower layers, top first, the built-in rootfs (if any) last. */
  layers: string[];
  vcpu: number;
  memoryMb: number;
  diskMb: number;
  /** Hostname inside (also the name in the runtime's claim). */
  name: string;
}

export interface CommandOptions {
  user: string;
  env?: Record<string, string>;
  cwd?: string;
  /** Each complete output line, as it comes. */
  onLine?: (stream: 'stdout' | 'stderr', line: string) => void;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface CommandResult {
  exitCode: number;
  /** envd's error text when the process could not run. */
  error: string;
  /** The last few KiB of output, for error messages. */
  tail: string;
}

const TAIL = 2048;

/** Splits a byte stream into lines (UTF-8 decoded per line; a partial line waits for its end). */
class LineSplitter {
  private rest = '';
  private readonly decoder = new TextDecoder();
  constructor(private readonly emit: (line: string) => void) {}
  push(bytes: Uint8Array): void {
    const text = this.rest + this.decoder.decode(bytes, { stream: true });
    const lines = text.split('\n');
    this.rest = lines.pop() ?? '';
    for (const l of lines) this.emit(l.replace(/\r$/, ''));
    // A line without an end (progress bars) is flushed once it gets long.
    if (this.rest.length > 8192) {
      this.emit(this.rest);
      this.rest = '';
    }
  }
  end(): void {
    const last = this.rest + this.decoder.decode();
    this.rest = '';
    if (last) this.emit(last);
  }
}

export class BuildSandbox {
  private process: Client<typeof Process>;
  readonly accessToken = randomBytes(24).toString('hex');
  envdVersion = '';

  private constructor(
    private readonly runtime: BuildRuntime,
    readonly slotId: string,
    readonly address: string,
    private readonly log: Logger,
  ) {
    const token = this.accessToken;
    this.process = createClient(
      Process,
      envdTransport(address, [
        (next) => (req) => {
          req.header.set(ENVD_ACCESS_TOKEN_HEADER, token);
          return next(req);
        },
      ]),
    );
  }

  /** Boots, claims (limits, internet on) and initialises envd; destroys the slot again if any of that fails. */
  static async start(runtime: BuildRuntime, o: SandboxOptions, log: Logger): Promise<BuildSandbox> {
    const limits = { vcpu: o.vcpu, memoryMb: o.memoryMb };
    const slot = await runtime.boot({ templateId: 'build', layers: o.layers, diskMb: o.diskMb, limits });
    const sb = new BuildSandbox(runtime, slot.slotId, slot.address, log.child({ slotId: slot.slotId }));
    try {
      await runtime.claim(slot.slotId, { sandboxId: o.name, limits, allowInternetAccess: true });
      ({ version: sb.envdVersion } = await initEnvd({
        address: slot.address,
        initToken: slot.initToken,
        body: {
          envVars: {},
          accessToken: sb.accessToken,
          defaultUser: 'root',
          defaultWorkdir: '/',
          hostname: o.name,
          timestamp: new Date().toISOString(),
        },
        log,
      }));
    } catch (err) {
      await runtime.destroy(slot.slotId).catch((e: unknown) => log.error({ err: e }, 'destroying a build sandbox failed'));
      throw err;
    }
    return sb;
  }

  /** Runs `argv` to its end (or the timeout); output lines go to onLine as they arrive. */
  exec(argv: string[], o: CommandOptions): Promise<CommandResult> {
    return this.follow(argv, o, o.timeoutMs ?? 0);
  }

  /**
   * Starts `argv` through envd and follows its event stream to the end: output lines to onLine (and the last
   * few kept for error messages), `onStart` once envd reports the process started.
   */
  private async follow(argv: string[], o: CommandOptions, timeoutMs: number, onStart?: () => void): Promise<CommandResult> {
    const [cmd, ...args] = argv;
    let exitCode = -1;
    let error = '';
    let tail = '';
    const keep = (s: string) => {
      tail = (tail + s + '\n').slice(-TAIL);
    };
    const out = new LineSplitter((l) => (keep(l), o.onLine?.('stdout', l)));
    const err = new LineSplitter((l) => (keep(l), o.onLine?.('stderr', l)));
    const stream = this.process.start(
      { process: { cmd: cmd!, args, envs: o.env ?? {}, ...(o.cwd ? { cwd: o.cwd } : {}) }, stdin: false },
      { headers: asUser(o.user), timeoutMs, signal: o.signal },
    );
    for await (const res of stream) {
      const ev = res.event?.event;
      if (ev?.case === 'start') onStart?.();
      else if (ev?.case === 'data') {
        if (ev.value.output.case === 'stdout') out.push(ev.value.output.value);
        else if (ev.value.output.case === 'stderr') err.push(ev.value.output.value);
      } else if (ev?.case === 'end') {
        exitCode = ev.value.exitCode;
        error = ev.value.error ?? '';
      }
    }
    out.end();
    err.end();
    return { exitCode, error, tail };
  }

  /** `bash -l -c script` as E2B runs RUN steps (a login shell: /etc/profile PATH and friends). */
  shell(script: string, o: CommandOptions): Promise<CommandResult> {
    return this.exec(['/bin/bash', '-l', '-c', script], o);
  }

  /** Starts a command and leaves it running; resolves once envd reports it started. */
  async startBackground(script: string, o: CommandOptions & { signal: AbortSignal }): Promise<{ done: Promise<CommandResult> }> {
    let started!: () => void;
    let failed!: (e: unknown) => void;
    const startedP = new Promise<void>((res, rej) => ((started = res), (failed = rej)));
    const run = this.follow(['/bin/bash', '-l', '-c', script], o, 0, () => started());
    run.then(() => started(), failed);
    await startedP;
    return { done: run };
  }

  /** Uploads a host file to `path` inside (as root) through envd's /files, as the SDK writes files. */
  async upload(hostFile: string, path: string): Promise<void> {
    const { size } = await stat(hostFile);
    const url = new URL(`http://${this.address}:${ENVD_PORT}/files`);
    url.searchParams.set('path', path);
    url.searchParams.set('username', 'root');
    const res = await request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size), [ENVD_ACCESS_TOKEN_HEADER]: this.accessToken },
      body: createReadStream(hostFile),
      // A reply that never starts fails the step instead of holding the build.
      headersTimeout: 10 * 60_000,
      bodyTimeout: 30_000,
    });
    // The reply is whatever answers on 49983 in the build sandbox: read within a bound.
    const text = await readCapped(res.body, 64 * 1024);
    if (res.statusCode !== 200) throw new Error(`envd refused the upload (${res.statusCode}): ${text.slice(0, 300)}`);
  }

  exportUpper(destFile: string): Promise<{ bytes: number; sha256: string }> {
    return this.runtime.exportUpper(this.slotId, destFile);
  }

  async destroy(): Promise<void> {
    await this.runtime.destroy(this.slotId).catch((err: unknown) => this.log.error({ err }, 'destroying a build sandbox failed'));
  }
}
