// Every crun invocation of the runtime, against one state root (`<dataDir>/crun`), so crun's view of
// containers is private to this runtime instance and survives an orchestrator restart.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, type RunResult } from './run-command.js';
import { BootFailed } from './runtime-errors.js';
import { processStartTime } from './slot-store.js';

export const SANDBOX_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class CrunCli {
  constructor(readonly stateRoot: string) {}

  /**
   * `crun create`, then `between(pid of the first process)` (the host plumbs the netns and binds it at
   * `netnsPath`), then `crun start`. stdio is /dev/null (the sandbox inherits crun's and must hold no host pipe or file); crun's
   * own errors go to `logFile`, quoted in the BootFailed it throws. A failed step leaves the container
   * for the caller's cleanup (killAndDelete).
   */
  async createAndStart(slotId: string, bundle: string, logFile: string, netnsPath: string, between: (pid: number) => Promise<void>): Promise<number> {
    const crun = async (args: string[]): Promise<void> => {
      const r = await run('crun', ['--root', this.stateRoot, `--log=file:${logFile}`, ...args], { nullStdio: true, allowFailure: true });
      if (r.code === 0) return;
      const why = await readFile(logFile, 'utf8').catch(() => '');
      throw new BootFailed(slotId, `crun ${args[0]} exited ${r.code}: ${why.trim().split('\n').slice(-3).join(' | ')}`);
    };
    await crun(['create', '--bundle', bundle, slotId]);
    const pid = await this.pid(slotId);
    await between(pid);
    await this.pinNetns(slotId, netnsPath);
    await crun(['start', slotId]);
    return pid;
  }

  /**
   * Records the plumbed netns by path in crun's saved copy of the spec. crun 1.8 `exec` joins all of
   * PID 1's namespaces with one pidfd setns() unless some namespace has a path, and that call fails
   * (EPERM) after it entered the user namespace once the netns is the container's (crun#1264, fixed
   * in 1.9); with a path it joins them one by one, as it did when the host made the netns.
   */
  private async pinNetns(slotId: string, netnsPath: string): Promise<void> {
    const file = join(this.stateRoot, slotId, 'config.json');
    await writeJson(file, withNetnsPath(JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>, netnsPath));
  }

  /**
   * Points crun's record of a container at a new first process (a CRIU-restored PID 1): crun checks
   * the pid and its start time before exec and kill.
   */
  async repoint(slotId: string, pid: number): Promise<void> {
    const file = join(this.stateRoot, slotId, 'status');
    const status = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    await writeJson(file, { ...status, pid, 'process-start-time': await startTimeOf(pid) });
  }

  /**
   * Records a container crun did not start (a tree CRIU restored from a snapshot) in crun's state, the way
   * `crun create` + `crun start` would have, so `exec`, `kill` and `delete` work on it like on any slot.
   */
  async adopt(slotId: string, bundle: string, spec: Record<string, unknown>, pid: number, netnsPath: string): Promise<void> {
    const dir = join(this.stateRoot, slotId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeJson(join(dir, 'config.json'), withNetnsPath(spec, netnsPath));
    await writeJson(join(dir, 'status'), {
      pid,
      'process-start-time': await startTimeOf(pid),
      'cgroup-path': (spec['linux'] as { cgroupsPath: string }).cgroupsPath,
      rootfs: (spec['root'] as { path: string }).path,
      'systemd-cgroup': false,
      bundle,
      created: new Date().toISOString(),
      detached: true,
      'external_descriptors': JSON.stringify(['/dev/null', '/dev/null', '/dev/null']),
    });
  }

  /**
   * Host pid of the container's first process, from crun's status record (what `crun state` prints, without a
   * crun start-up of ~9 ms of CPU; repoint and adopt already keep this record).
   */
  async pid(slotId: string): Promise<number> {
    const pid = await readFile(join(this.stateRoot, slotId, 'status'), 'utf8').then(
      (status) => (JSON.parse(status) as { pid?: unknown }).pid,
      () => undefined,
    ).catch(() => undefined);
    if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) throw new BootFailed(slotId, 'crun\'s status records no pid');
    return pid;
  }

  /**
   * SIGKILL everything and delete the container; absent containers are fine. One crun run: `delete --force` kills the
   * first process, and with it (the spec has a pid namespace) every process of the sandbox; what the slot's cgroup
   * may still hold beside them is the callers' to kill (`killSlotProcesses`), as it was after a `kill --all`.
   */
  async killAndDelete(slotId: string): Promise<void> {
    await run('crun', ['--root', this.stateRoot, 'delete', '--force', slotId], { allowFailure: true });
  }

  async list(): Promise<string[]> {
    const r = await run('crun', ['--root', this.stateRoot, 'list', '-q'], { allowFailure: true });
    return r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  }

  exec(slotId: string, args: string[], opts: { user?: string; input?: string; detach?: boolean }): Promise<RunResult> {
    const user = opts.user ? ['--user', opts.user] : [];
    // --env replaces the spec's environment, which carries envd's init token: exec'd commands get
    // only a PATH (and root's HOME), never the token.
    const env = ['--env', `PATH=${SANDBOX_PATH}`, ...(opts.user ? [] : ['--env', 'HOME=/root'])];
    // Detached processes get /dev/null stdio: they may outlive this call and must hold no host pipe.
    const detach = opts.detach ? ['--detach'] : [];
    return run('crun', ['--root', this.stateRoot, 'exec', ...detach, ...user, ...env, '--cwd', '/', slotId, ...args], {
      allowFailure: true,
      input: opts.input,
      nullStdio: opts.detach,
    });
  }
}

/** The spec with its network namespace named by path (see pinNetns). */
function withNetnsPath(spec: Record<string, unknown>, netnsPath: string): Record<string, unknown> {
  const linux = spec['linux'] as { namespaces: Array<{ type: string; path?: string }> };
  return { ...spec, linux: { ...linux, namespaces: linux.namespaces.map((n) => (n.type === 'network' ? { type: 'network', path: netnsPath } : n)) } };
}

/** crun's record of a process's start time: field 22 of /proc/<pid>/stat, as a number. */
async function startTimeOf(pid: number): Promise<number> {
  const t = await processStartTime(pid);
  if (t === null) throw new BootFailed(String(pid), `process ${pid} is gone`);
  return Number(t);
}

/** Replaces a crun state file atomically: crun may read it at any moment. */
async function writeJson(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, JSON.stringify(value));
  await rename(tmp, file);
}
