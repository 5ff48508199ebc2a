// Runs host tools (crun, ip, nft, mount, losetup, mmdebstrap) without a shell, so slot ids and paths
// are never interpreted. Everything the runtime does to the host goes through here. Tools are started by the
// spawn broker (a small helper process) so that no fork stops the orchestrator's event loop; a tool whose
// output is followed line by line (a long build) is started here, where its lines can be passed on.

import { spawn } from 'node:child_process';
import { CommandFailed } from './runtime-errors.js';
import { SpawnBroker } from './spawn-broker.js';

export interface RunOptions {
  /** Written to the child's stdin, then closed. */
  input?: string;
  /** Return the result instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  /** Called with each line of stdout and stderr as it arrives (long builds report progress). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Environment for the child; defaults to a minimal PATH so the host's env does not leak into tools. */
  env?: Record<string, string>;
  /**
   * Give the child /dev/null as stdin/stdout/stderr. Needed for `crun run --detach`: the sandbox
   * inherits crun's stdio, and must never hold a pipe to (or a file of) the host.
   */
  nullStdio?: boolean;
  /** Working directory of the child (overlay mounts with relative lower dirs). */
  cwd?: string;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Host operations the spawn broker does without a tool (native/host-ops.c has each one's arguments): util-linux's
 * mount, umount, losetup and prlimit cost milliseconds of CPU each in their own start-up, several times a slot.
 */
export const HOST_OP = {
  /** FSTYPE SOURCE TARGET FLAGS DATA */
  mount: 'cove:mount',
  /** TARGET [detach] */
  umount: 'cove:umount',
  /** IMAGE TARGET: an ext4 image on an autoclearing loop device, mounted; prints the device. */
  mountLoop: 'cove:mount-loop',
  /** PID SIGPENDING MSGQUEUE */
  prlimit: 'cove:prlimit',
  /** NAME: deletes a network link (`ip link del dev NAME`). */
  linkDel: 'cove:link-del',
  /** PID KEY=VALUE... (/proc/sys keys, written in PID's user namespace) */
  usernsSysctl: 'cove:userns-sysctl',
} as const;

const DEFAULT_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' };

let broker: SpawnBroker | undefined;

export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  let result: RunResult;
  if (opts.onLine) {
    result = await runFollowed(cmd, args, opts.onLine, opts);
  } else {
    broker ??= new SpawnBroker();
    result = await broker.run({
      cmd,
      args: [...args],
      env: opts.env ?? DEFAULT_ENV,
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      ...(opts.nullStdio ? { nullStdio: true } : { input: opts.input ?? '' }),
    });
  }
  if (result.code !== 0 && !opts.allowFailure) {
    throw new CommandFailed(`${cmd} ${args.join(' ')}`, result.code, opts.nullStdio ? '' : result.stderr || result.stdout);
  }
  return result;
}

/** Started here, not by the broker: each line of output goes to `onLine` as it arrives. */
function runFollowed(cmd: string, args: readonly string[], onLine: NonNullable<RunOptions['onLine']>, opts: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? DEFAULT_ENV,
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    let stdout = '';
    let stderr = '';
    const pending = { stdout: '', stderr: '' };
    const feed = (stream: 'stdout' | 'stderr', chunk: string): void => {
      pending[stream] += chunk;
      const lines = pending[stream].split('\n');
      pending[stream] = lines.pop() ?? '';
      for (const line of lines) onLine(line, stream);
    };
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      feed('stdout', c);
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      feed('stderr', c);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (pending.stdout) onLine(pending.stdout, 'stdout');
      if (pending.stderr) onLine(pending.stderr, 'stderr');
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => {
      /* the child may exit before reading its input; its exit code tells what happened */
    });
    child.stdin.end(opts.input ?? '');
  });
}
