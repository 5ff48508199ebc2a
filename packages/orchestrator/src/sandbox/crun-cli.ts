// Every crun invocation of the runtime, against one state root (`<dataDir>/crun`), so crun's view of
// containers is private to this runtime instance and survives an orchestrator restart.

import { readFile } from 'node:fs/promises';
import { run, type RunResult } from './run-command.js';
import { BootFailed } from './runtime-errors.js';

export const SANDBOX_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class CrunCli {
  constructor(readonly stateRoot: string) {}

  /**
   * `crun run --detach` with /dev/null stdio (the sandbox inherits crun's stdio and must hold no host
   * pipe or file); crun's own errors go to `logFile`, quoted in the BootFailed it throws.
   */
  async runDetached(slotId: string, bundle: string, logFile: string): Promise<void> {
    const r = await run('crun', ['--root', this.stateRoot, `--log=file:${logFile}`, 'run', '--detach', '--bundle', bundle, slotId], {
      nullStdio: true,
      allowFailure: true,
    });
    if (r.code === 0) return;
    const why = await readFile(logFile, 'utf8').catch(() => '');
    throw new BootFailed(slotId, `crun run exited ${r.code}: ${why.trim().split('\n').slice(-3).join(' | ')}`);
  }

  /** Host pid of the container's first process. */
  async pid(slotId: string): Promise<number> {
    const r = await run('crun', ['--root', this.stateRoot, 'state', slotId]);
    const pid = (JSON.parse(r.stdout) as { pid?: number }).pid;
    if (!pid) throw new BootFailed(slotId, 'crun state reports no pid');
    return pid;
  }

  /** SIGKILL everything and delete the container; absent containers are fine. */
  async killAndDelete(slotId: string): Promise<void> {
    await run('crun', ['--root', this.stateRoot, 'kill', '--all', slotId, 'KILL'], { allowFailure: true });
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
