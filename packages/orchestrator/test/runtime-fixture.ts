// Shared set-up for the runtime tests: a real LinuxSandboxRuntime on its own gateway link, subnet, nft table,
// cgroup parent and data dir (so test files can run beside each other and beside a real node), reusing
// one cached `base` template build.

import { execFile } from 'node:child_process';
import { access, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { LinuxSandboxRuntime } from '../src/sandbox/linux-runtime.js';
import { mountsUnder } from '../src/sandbox/mount-tree.js';
import { ADDRESSES_FILE } from '../src/sandbox/slot-store.js';

const pexec = promisify(execFile);

export const TEMPLATES_DIR = '/var/tmp/cove-runtime-test/templates';
const here = fileURLToPath(new URL('.', import.meta.url));
// dist/test/ → packages/orchestrator/
export const PACKAGE_DIR = join(here, '..', '..');

/** A stand-in for envd: answers 204 on every path of port 49983. */
export const STAND_IN = [
  '/opt/cove/bin/node',
  '-e',
  "require('http').createServer((q,s)=>{s.statusCode=204;s.end()}).listen(49983)",
];

export interface TestRuntimeOptions {
  instance: string;
  vethPrefix: string;
  subnet: string;
  pidsLimit?: number;
  /** The envd bundle its slots run; the package's own build by default. */
  envdDir?: string;
  /** The host node binary it lends; the one running the test by default. */
  nodeBinary?: string;
}

/** The envd bundle the runtime tests run (packages/envd's build). */
export const ENVD_BUNDLE_DIR = join(PACKAGE_DIR, '..', 'envd', 'dist', 'bundle');

export function makeRuntime(o: TestRuntimeOptions, dataDir = `/var/tmp/cove-runtime-test/${o.instance}`): LinuxSandboxRuntime {
  const rt = new LinuxSandboxRuntime({
    dataDir,
    templatesDir: TEMPLATES_DIR,
    recipesDir: join(PACKAGE_DIR, 'templates'),
    envdDir: o.envdDir ?? ENVD_BUNDLE_DIR,
    nodeBinary: o.nodeBinary ?? process.execPath,
    logger: pino({ level: 'error' }),
    instance: o.instance,
    vethPrefix: o.vethPrefix,
    subnet: o.subnet,
    pidsLimit: o.pidsLimit,
  });
  // A test file's data dir (its exec-only node and tini, ~100–200 MB, and snapshots) goes with its host set-up: the
  // suite's runtime instances otherwise kept ~2 GB on the disk after every run. Kept whenever a slot, a container or
  // a mount is left in it, so a leak stays there for `leftovers` to find.
  const teardownHost = rt.teardownHost.bind(rt);
  rt.teardownHost = async () => {
    const cleaned = await teardownHost();
    if (await emptyOfSlots(dataDir)) await rm(dataDir, { recursive: true, force: true });
    return cleaned;
  };
  return rt;
}

async function emptyOfSlots(dataDir: string): Promise<boolean> {
  const entries = async (dir: string) => (await readdir(join(dataDir, dir)).catch(() => [])).length;
  // Slot dirs: the address allocation's state lives beside them.
  const slotDirs = (await readdir(join(dataDir, 'slots')).catch(() => [])).filter((n) => n !== ADDRESSES_FILE).length;
  return slotDirs === 0 && (await entries('crun')) === 0 && (await mountsUnder(dataDir)).length === 0;
}

export async function sh(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await pexec(cmd, args);
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** The shared poll (test-support): true once `check` is, false at the deadline. */
export { pollUntil as waitFor } from '@cove/test-support/eventually';

export async function healthy(address: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${address}:49983/health`, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

/** Every host-side trace of a slot that still exists; empty when destroy left nothing. */
export async function leftovers(
  o: TestRuntimeOptions,
  dataDir: string,
  slotId: string,
  address: string,
): Promise<string[]> {
  const found: string[] = [];
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  if (mountinfo.includes(slotId)) found.push('mount');
  const loops = await sh('losetup', ['-a']);
  if (loops.stdout.includes(slotId)) found.push('loop device');
  if ((await sh('ip', ['link', 'show', 'dev', `${o.vethPrefix}${slotId}`])).code === 0) found.push('veth');
  if ((await sh('ip', ['netns', 'list'])).stdout.includes(`${o.instance}-${slotId}`)) found.push('netns');
  if ((await sh('ip', ['-4', 'route', 'show', 'exact', `${address}/32`])).stdout.trim()) found.push('route');
  for (const c of ['memory', 'cpu', 'pids', 'freezer', 'cpuset', 'cpuacct', 'unified', '']) {
    const dir = join('/sys/fs/cgroup', c, o.instance, slotId);
    if (await access(dir).then(() => true, () => false)) found.push(`cgroup ${dir}`);
  }
  const set = await sh('nft', ['list', 'set', 'inet', o.instance, 'internet']);
  if (new RegExp(`\\b${address.replace(/\./g, '\\.')}\\b`).test(set.stdout)) found.push('nft element');
  if (await access(join(dataDir, 'slots', slotId)).then(() => true, () => false)) found.push('slot dir');
  const crun = await sh('crun', ['--root', join(dataDir, 'crun'), 'list', '-q']);
  if (crun.stdout.includes(slotId)) found.push('crun container');
  return found;
}
