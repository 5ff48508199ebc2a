import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** A component process started detached by `cove up`, tracked by a pid file. */
export interface Managed {
  name: string;
  pid: number;
  /** What the process's command line contains (a node entry file, or a config path for other programs). */
  entry: string;
}

function pidFile(runDir: string, name: string): string {
  return join(runDir, `${name}.pid`);
}

/** The running process recorded for `name`, if its pid is alive and still runs the same entry (no pid reuse). */
export function running(runDir: string, name: string): Managed | undefined {
  const file = pidFile(runDir, name);
  if (!existsSync(file)) return undefined;
  const rec = JSON.parse(readFileSync(file, 'utf8')) as Managed;
  const cmdline = commandLineOf(rec.pid);
  if (cmdline?.includes(rec.entry)) return rec;
  rmSync(file, { force: true });
  return undefined;
}

/**
 * A process's command line, or undefined when it is gone. Right after spawn() returns the child may still be inside
 * exec: the kernel closes the close-on-exec pipe libuv waits on before it sets up the new argument pages, and in
 * that window cmdline reads empty. A CI run saw a registry just started taken for gone (its pid file removed, the
 * process left running untracked); this window is the one way we found for that. An empty read is looked at again
 * for up to ~200 ms; a process whose cmdline stays empty (a kernel thread, a zombie) is not a component.
 */
function commandLineOf(pid: number): string | undefined {
  for (let i = 0; i < 20; i++) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return undefined;
    }
    if (cmdline !== '') return cmdline;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
  }
  return '';
}

/**
 * Start `entry` under node (or `command`, recognised later by `entry` in its command line) detached with its
 * output appended to logs/<name>.log; it outlives the CLI.
 */
export function start(
  name: string,
  entry: string,
  env: Record<string, string>,
  runDir: string,
  logDir: string,
  command?: { bin: string; args: string[] },
): Managed {
  mkdirSync(runDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  const out = openSync(join(logDir, `${name}.log`), 'a');
  const child = spawn(command?.bin ?? process.execPath, command?.args ?? [entry], {
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, ...env },
  });
  closeSync(out);
  child.on('error', () => undefined); // a missing binary: reported by the readiness wait (the process is gone)
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  const rec: Managed = { name, pid: child.pid, entry };
  writeFileSync(pidFile(runDir, name), JSON.stringify(rec) + '\n');
  return rec;
}

/**
 * Whether `pid` still runs. A zombie does not: it has exited and waits for its parent to reap it, which for a
 * component whose `cove up` has ended is init (seen reaping only every ~2 s, so each stop waited that long).
 */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (process.platform !== 'linux') return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state …": comm may hold spaces and parentheses, the state follows the last ')'.
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false; // reaped between the two looks
  }
}

/** SIGTERM, then SIGKILL after `graceMs`. Returns true if a process was stopped. */
export async function stop(runDir: string, name: string, graceMs = 20_000): Promise<boolean> {
  const rec = running(runDir, name);
  if (!rec) return false;
  process.kill(rec.pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (alive(rec.pid) && Date.now() < deadline) await sleep(100);
  if (alive(rec.pid)) process.kill(rec.pid, 'SIGKILL');
  while (alive(rec.pid)) await sleep(50);
  rmSync(pidFile(runDir, name), { force: true });
  return true;
}
