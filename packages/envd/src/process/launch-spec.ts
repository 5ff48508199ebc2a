import { access, constants, readFile, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { EnvdError } from '../errors.js';
import { resolvePath } from '../paths.js';
import type { SandboxUser } from '../users/user-db.js';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const SETPRIV_CANDIDATES = ['/usr/bin/setpriv', '/bin/setpriv'];

/** What to exec, where, with which environment and identity. */
export interface LaunchSpec {
  file: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  /** Set when Node itself switches uid/gid (no supplementary groups to keep, or no setpriv available). */
  uid?: number;
  gid?: number;
}

let setprivPath: Promise<string | undefined> | undefined;

/**
 * util-linux `setpriv` (essential in Debian) switches uid, gid *and* supplementary groups
 * before exec; Node's own uid/gid spawn options drop supplementary groups (libuv calls
 * setgroups(0)), which would break group-based sudo and file access for the sandbox user.
 */
function findSetpriv(): Promise<string | undefined> {
  setprivPath ??= (async () => {
    // In a user namespace whose setgroups is "deny", no process can change groups; libuv's
    // plain uid/gid switch tolerates that, setpriv --groups would fail.
    const setgroups = await readFile('/proc/self/setgroups', 'utf8').catch(() => 'allow');
    if (setgroups.trim() === 'deny') return undefined;
    for (const p of SETPRIV_CANDIDATES) {
      if (await access(p, constants.X_OK).then(() => true, () => false)) return p;
    }
    return undefined;
  })();
  return setprivPath;
}

async function findExecutable(cmd: string, pathVar: string, cwd: string): Promise<string> {
  const candidates = cmd.includes('/') ? [posix.resolve(cwd, cmd)] : pathVar.split(':').filter(Boolean).map((d) => posix.join(d, cmd));
  for (const c of candidates) {
    const st = await stat(c).catch(() => undefined);
    if (st?.isFile() && (await access(c, constants.X_OK).then(() => true, () => false))) return c;
  }
  throw new EnvdError('invalid_argument', `executable "${cmd}" not found`);
}

export interface LaunchInput {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd: string | undefined;
  user: SandboxUser;
  baseEnv: Record<string, string>;
  defaultWorkdir: string | undefined;
  /** uid envd runs as; switching is needed only when it differs from the target user. */
  selfUid: number;
}

/**
 * Builds the launch: environment = user defaults < /init env vars < per-command envs
 * (built fresh for every command, so nothing leaks between commands and nothing of envd's
 * own environment, such as its init token, reaches a child).
 */
export async function buildLaunchSpec(input: LaunchInput): Promise<LaunchSpec> {
  const { user } = input;
  if (input.cmd === '' || input.cmd.includes('\0')) throw new EnvdError('invalid_argument', 'cmd is required');
  for (const a of input.args) if (a.includes('\0')) throw new EnvdError('invalid_argument', 'args contain a NUL byte');
  const env: Record<string, string> = {
    PATH: DEFAULT_PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: user.shell,
    ...input.baseEnv,
    ...input.envs,
  };
  for (const [k, v] of Object.entries(env)) {
    if (k === '' || k.includes('=') || k.includes('\0') || v.includes('\0')) throw new EnvdError('invalid_argument', `invalid env var "${k}"`);
  }
  const homeExists = await stat(user.home).then((s) => s.isDirectory(), () => false);
  const fallback = input.defaultWorkdir ?? (homeExists ? user.home : '/');
  const cwd = input.cwd ? resolvePath(input.cwd, user.home, 'cwd') : fallback;
  const cwdStat = await stat(cwd).catch(() => undefined);
  if (!cwdStat?.isDirectory()) throw new EnvdError('invalid_argument', `cwd "${cwd}" does not exist or is not a directory`);
  const file = await findExecutable(input.cmd, env.PATH, cwd);

  if (user.uid === input.selfUid) return { file, args: input.args, cwd, env };
  // A user with no group beyond its own gets the same identity from Node's switch: one exec (~1 ms) less a command.
  if (user.groups.every((g) => g === user.gid)) return { file, args: input.args, cwd, env, uid: user.uid, gid: user.gid };
  const setpriv = await findSetpriv();
  if (!setpriv) return { file, args: input.args, cwd, env, uid: user.uid, gid: user.gid };
  return {
    file: setpriv,
    args: [`--reuid=${user.uid}`, `--regid=${user.gid}`, `--groups=${user.groups.join(',')}`, '--', file, ...input.args],
    cwd,
    env,
  };
}
