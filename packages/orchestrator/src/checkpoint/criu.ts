// Checkpoint/restore of a sandbox slot's whole process tree (tini, envd, user processes) with CRIU 4.1
// (built by scripts/install-criu.sh), driven directly on the container's PID 1: Debian's crun has no
// CRIU support, and runc would need the same external-mount and netns plumbing on top of its own.
//
// What a slot must look like to be checkpointable (the runtime's layout, oci-spec.ts and slot-network.ts):
//  - its netns belongs to its user namespace (crun creates it; the host plumbs the veth between
//    `crun create` and `crun start`). A host-made netns is refused by CRIU's dump ("namespaces don't
//    belong to the target userns"), and could not be re-joined from the restored userns either.
//  - /sys is a sysfs mounted by crun (possible once the userns owns the netns), not a host bind.
//  - stdio is /dev/null (never a host file or pipe).
// The netns is dumped empty (--empty-ns net): on restore CRIU makes a fresh one in the restored userns
// and runs an action script (setup-namespaces) in which the host plumbs veth, address and route again,
// before sockets are restored. So a restore may land on another node or in another slot, as long as
// the address is the same.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, chmod, copyFile, mkdir, readdir, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { release, version } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../sandbox/run-command.js';
import { PLUMB_SCRIPT, removeVethAndNetns } from '../sandbox/slot-network.js';
import { childPids } from '../sandbox/slot-processes.js';
import { startLazyPages, type LazyPages } from './lazy-pages.js';

/** Where scripts/install-criu.sh puts criu (its default prefix); COVE_CRIU overrides. */
export const DEFAULT_CRIU = '/var/lib/cove/tools/criu-4.1.1-cove8/criu';

/**
 * Whether a lazy restore with `criu` may start before its lazy-pages daemon listens: by default only with Cove's
 * build (DEFAULT_CRIU), whose patch 11 retries the connect; another binary (COVE_CRIU) may connect once, so its
 * restore waits for the daemon. COVE_CRIU_LAZY_CONNECT_RETRIES=1 vouches for another binary, any other non-empty
 * value (0) waits.
 */
export function lazyConnectRetries(criu: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env['COVE_CRIU_LAZY_CONNECT_RETRIES'];
  return v ? v === '1' : criu === DEFAULT_CRIU;
}

/**
 * Whether a dump looks for inotify watch paths in the sandbox's whole root mount (`--irmap-scan-path /`), which a
 * desktop session's watches need. On by default with Cove's criu (DEFAULT_CRIU), whose patch 3 keeps that host-side
 * scan inside the sandbox's root mount (no links, no other mounts) and bounds it (2^18 entries, 32 MiB of paths);
 * never by default with another binary (COVE_CRIU), which may lack the patch. COVE_CRIU_IRMAP_SCAN_ROOT=1 forces it
 * on, any other non-empty value (0) off.
 */
export function irmapScanRoot(criu: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env['COVE_CRIU_IRMAP_SCAN_ROOT'];
  return v ? v === '1' : criu === DEFAULT_CRIU;
}

export async function findCriu(): Promise<string | null> {
  const path = process.env['COVE_CRIU'] || DEFAULT_CRIU;
  return access(path).then(() => path, () => null);
}

export class CheckpointFailed extends Error {
  constructor(message: string, readonly logTail: string) {
    super(logTail ? `${message}: ${logTail}` : message);
    this.name = 'CheckpointFailed';
  }
}

/** The slot's network as the host plumbs it (same names as slot-network.ts). */
export interface SlotNet {
  netnsName: string;
  hostVeth: string;
  /** `10.228.0.2/16` */
  addressCidr: string;
  gateway: string;
}

type Spec = Record<string, any>;

/** CRIU action script: at setup-namespaces the restored tree's netns is still empty; plumb it. */
const ACTION_SCRIPT = `#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = setup-namespaces ] || exit 0
# criu runs in a mount namespace of its own (see criuCommand): the netns is named in the host's.
if [ -n "$COVE_HOST_MNTNS" ]; then M=$COVE_HOST_MNTNS; export COVE_HOST_MNTNS=; exec nsenter --mount="$M" sh "$0"; fi
NS=/proc/$CRTOOLS_INIT_PID/ns/net
${PLUMB_SCRIPT}`;

function netEnv(net: SlotNet): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    COVE_HOST_VETH: net.hostVeth,
    COVE_ADDRESS: net.addressCidr,
    COVE_GATEWAY: net.gateway,
    COVE_NETNS: net.netnsName,
  };
}

/**
 * The one action ACTION_SCRIPT works in: Cove's criu runs the script for no other (install-criu.sh patch 12); another
 * criu ignores this and runs it for every action, where it exits at once.
 */
const SCRIPT_ACTIONS_ENV = { CRIU_SCRIPT_ACTIONS: 'setup-namespaces' } as const;

/** Removes the slot's named netns and host veth (both may be absent). */
export async function removeNet(net: SlotNet): Promise<void> {
  await removeVethAndNetns(net.hostVeth, net.netnsName);
}

/** Plumbs the netns of `initPid` (created by crun, owned by the sandbox's userns) like slot-network.ts does. */
export async function plumbNetwork(initPid: number, net: SlotNet): Promise<void> {
  await run('sh', ['-c', PLUMB_SCRIPT], { env: { ...netEnv(net), NS: `/proc/${initPid}/ns/net` } });
}

/**
 * Starts a slot's container checkpointably: `crun create`, plumb the network, `crun start`. Returns the
 * host pid of PID 1. For tests that relaunch a slot's container with other processes.
 */
export async function launchCheckpointable(o: { crunRoot: string; slotId: string; bundle: string; spec: Spec; net: SlotNet }): Promise<number> {
  await writeFile(join(o.bundle, 'config.json'), JSON.stringify(o.spec));
  await run('crun', ['--root', o.crunRoot, 'create', '--bundle', o.bundle, o.slotId], { nullStdio: true });
  const state = await run('crun', ['--root', o.crunRoot, 'state', o.slotId]);
  const pid = (JSON.parse(state.stdout) as { pid: number }).pid;
  try {
    await plumbNetwork(pid, o.net);
    await run('crun', ['--root', o.crunRoot, 'start', o.slotId], { nullStdio: true });
  } catch (err) {
    await run('crun', ['--root', o.crunRoot, 'delete', '--force', o.slotId], { allowFailure: true });
    throw err;
  }
  return pid;
}

/** One external bind mount of the slot: its path inside, the key in the image, its host source. */
interface ExternalMount {
  key: string;
  destination: string;
  source: string;
}

interface Manifest {
  version: 1;
  createdAt: string;
  externals: ExternalMount[];
  /** The builds of the lent binaries the tree ran, by name (lent-files.ts); absent in older images. */
  builds?: Record<string, string>;
}

const MANIFEST = 'cove-checkpoint.json';

/**
 * Mounts CRIU cannot recreate itself: bind mounts from the host (device nodes, the lent binaries, the
 * envd bundle) and crun's masks of files (binds of /dev/null). Found in the live mountinfo, with host
 * sources from the spec (binds) or the devtmpfs path (/dev/<name>).
 */
async function externalMounts(initPid: number, spec: Spec): Promise<ExternalMount[]> {
  const binds = new Map<string, string>();
  for (const m of spec.mounts as Array<{ destination: string; type: string; source: string }>) {
    if (m.type === 'bind') binds.set(m.destination, m.source);
  }
  const out = new Map<string, ExternalMount>();
  for (const line of (await readFile(`/proc/${initPid}/mountinfo`, 'utf8')).split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0) continue;
    const [root, point, fstype] = [f[3] ?? '', f[4] ?? '', f[sep + 1] ?? ''];
    if (out.has(point)) continue;
    let source = binds.get(point);
    if (!source && fstype === 'devtmpfs') source = join('/dev', root);
    if (!source) continue;
    out.set(point, { key: `m${out.size}`, destination: point, source });
  }
  return [...out.values()];
}

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isFile()) n += (await stat(join(dir, e.name))).size;
  }
  return n;
}

/**
 * CRIU probes the kernel's features ("kerndat", ~20 ms of every dump and restore) and caches the result in
 * /run/criu.kdat, but only when /run is a tmpfs: a tmpfs is gone after a reboot, the only way to another
 * kernel. Nodes whose /run is not one (containers, this machine) probe every time. So criu runs in a
 * mount namespace of its own whose /run is a directory of a node-owned tmpfs (KDAT_TMPFS): the cache
 * lives as long as that mount, i.e. until reboot, as CRIU intends. The directory is keyed by the criu
 * binary, the kernel and the boot, so no criu ever reads a cache another build or kernel wrote, even if
 * the mount outlived one (it cannot outlive a boot). Nothing a sandbox controls is on that path.
 */
export const KDAT_TMPFS = process.env['COVE_CRIU_KDAT_DIR'] || '/var/lib/cove/criu-kdat';
const TMPFS_MAGIC = 0x01021994;
const kdatDirs = new Map<string, Promise<string | null>>();

/** The directory criu sees as /run (created on KDAT_TMPFS, mounted if need be); null if that cannot be had. */
export function kdatRunDir(criu: string): Promise<string | null> {
  let dir = kdatDirs.get(criu);
  if (!dir) kdatDirs.set(criu, (dir = prepareKdatRunDir(criu).catch(() => null)));
  return dir;
}

async function prepareKdatRunDir(criu: string): Promise<string | null> {
  await mkdir(KDAT_TMPFS, { recursive: true, mode: 0o700 });
  if ((await statfs(KDAT_TMPFS)).type !== TMPFS_MAGIC) {
    // Serialised between orchestrators of one host (two would stack two mounts).
    await run('flock', [`${KDAT_TMPFS}.lock`, 'sh', '-c', 'mountpoint -q "$0" || mount -t tmpfs -o mode=0700,size=1m,nosuid,nodev,noexec cove-criu-kdat "$0"', KDAT_TMPFS]);
    if ((await statfs(KDAT_TMPFS)).type !== TMPFS_MAGIC) return null;
  }
  const bin = await stat(criu);
  const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  const key = createHash('sha256').update(JSON.stringify([criu, bin.size, bin.mtimeMs, bin.ino, release(), version(), bootId])).digest('hex').slice(0, 16);
  const dir = join(KDAT_TMPFS, key);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // A criu killed between writing its temporary file and renaming it leaves the file behind, and its
  // O_EXCL create then refuses every later save.
  await rm(join(dir, 'criu.kdat.tmp'), { force: true });
  return dir;
}

/** dist/src/checkpoint/criu.js → dist/native/criu-ns (native/criu-ns.c, built by `npm run build:native`). */
const CRIU_NS = fileURLToPath(new URL('../../native/criu-ns', import.meta.url));

/**
 * Command and argv that run criu with `args`: through native/criu-ns, which first joins the cgroups named by
 * `join` (their `cgroup.procs` files) and then, when there is a kdat cache, runs criu in a mount namespace of its
 * own whose /run is that cache, staying itself in the host's namespace and naming it for the action script
 * (COVE_HOST_MNTNS): that pid lives as long as criu does, so the path can never come to name another process's
 * namespace, as the orchestrator's own pid could once it died and the pid were reused.
 */
export async function criuCommand(criu: string, args: string[], join: readonly string[] = []): Promise<{ file: string; argv: string[] }> {
  // COVE_CRIU_KDAT_CACHE=0: criu as before (the bench's same-run baseline; a way out if a host refuses the mount).
  const runDir = process.env['COVE_CRIU_KDAT_CACHE'] === '0' ? null : await kdatRunDir(criu);
  if (!runDir && join.length === 0) return { file: criu, argv: args };
  // slave: the host's later mounts (a slot's overlay) still show inside; nothing mounted inside comes out.
  return { file: CRIU_NS, argv: [...join.flatMap((procs) => ['--join', procs]), runDir ?? '', criu, ...args] };
}

/**
 * SIGKILLs a process started from criuCommand: `pid` and its direct children. Under the kdat wrapper criu is the
 * child of criu-ns, which must live as long as it does (COVE_HOST_MNTNS), and killing that wrapper alone left criu
 * orphaned, waiting for good with the slot's mounts (and its loop device) held. Children first, so the parent forks
 * nothing new in between.
 */
export async function killCriu(pid: number): Promise<void> {
  for (const p of [...((await childPids(pid)) ?? []), pid]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * In every criu run: take tasks out of the parasite and restorer blobs by tracing them syscall by syscall to their
 * rt_sigreturn (criu's FI_NO_BREAKPOINTS switch), not with a hardware breakpoint on it. On some VMs such a breakpoint
 * never fires: the task went back to its own code untrapped while criu waited for the trap for good (on one machine
 * of ours every dump hung so: tini back in sigtimedwait, criu in compel_stop_on_syscall's wait4).
 */
export const CRIU_NO_BREAKPOINTS_ENV = { CRIU_FAULT: '130' } as const;

/** Runs criu to its end; `stop` resolving true first SIGKILLs it (and its wrapper), which then reads as a failed run. */
async function runCriu(criu: string, args: string[], logFile: string, env?: Record<string, string>, stop?: Promise<boolean>): Promise<number> {
  const cmd = await criuCommand(criu, [...args, '-o', logFile, '-v4']);
  return new Promise((resolve, reject) => {
    // criu's own stdio is /dev/null: the restored tree inherits nothing from the orchestrator.
    const child = spawn(cmd.file, cmd.argv, { stdio: 'ignore', env: { ...(env ?? { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }), ...CRIU_NO_BREAKPOINTS_ENV } });
    let ended = false;
    child.on('error', reject);
    child.on('exit', (code) => {
      ended = true;
      resolve(code ?? 1);
    });
    void stop?.then((yes) => {
      if (yes && !ended && child.pid !== undefined) void killCriu(child.pid);
    });
  });
}

/**
 * The path for this run's `<name>.log` in `dir` (a node's directory, never one the tree sees), the previous run's
 * kept beside it as `<name>.prev.log` and anything older gone: a sandbox resumed a thousand times must not fill
 * the node's disk with a ~160 KB log per resume.
 */
export async function freshLog(dir: string, name: string): Promise<string> {
  const log = join(dir, `${name}.log`);
  await rename(log, join(dir, `${name}.prev.log`)).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  return log;
}

async function logTail(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => /Error|error/.test(l) && !/RLIMIT_NOFILE|iptables|ip6tables/.test(l))
    .slice(-4)
    .join(' | ');
}

export interface CheckpointResult {
  ms: number;
  imageBytes: number;
}

/**
 * Dumps the tree under `initPid` into `imagesDir` (created; must not exist) and leaves it dead. The
 * slot's named netns and veth are removed afterwards (the restore makes new ones). The overlay (rootfs)
 * stays mounted; it is the filesystem half of the checkpoint.
 */
export async function checkpointSlot(o: {
  criu: string;
  initPid: number;
  imagesDir: string;
  rootfs: string;
  spec: Spec;
  net: SlotNet;
  /** The builds of the lent binaries the tree runs, recorded for the restore. */
  builds?: Record<string, string>;
}): Promise<CheckpointResult> {
  const started = Date.now();
  // The restored tasks read some images themselves, as root inside (host uid 100000, not the owner):
  // they must be able to traverse the directory (criu writes the images 0644).
  await mkdir(o.imagesDir, { recursive: false });
  await chmod(o.imagesDir, 0o711);
  const externals = await externalMounts(o.initPid, o.spec);
  const manifest: Manifest = { version: 1, createdAt: new Date().toISOString(), externals, ...(o.builds ? { builds: o.builds } : {}) };
  const args = [
    'dump', '-t', String(o.initPid), '-D', o.imagesDir,
    // The restore bind-mounts this path as the tree's root mount (the slot's overlay).
    '--root', o.rootfs,
    // Tasks go back into the same cgroup paths (the slot's, crun's naming).
    '--manage-cgroups',
    // Established connections survive when the address comes back; the network is locked with
    // nftables (libnftables is linked in; Debian 12 has no iptables binary by default).
    '--tcp-established', '--network-lock', 'nftables',
    // Network config is the host's business (the action script redoes it), not the image's.
    '--empty-ns', 'net',
    // flock/POSIX/OFD locks the tree holds (a browser's profile lock, sqlite's) are dumped and taken again on
    // restore; without it any held lock refuses the dump. Costs nothing when none is held (criu reads /proc/locks
    // either way). Cove's criu (patch 5) retakes them without waiting, so a holder outside the tree fails the restore.
    '--file-locks',
    // An inotify watch on the overlay (a desktop's config monitors, any file watcher) has no openable file
    // handle; criu then finds the watched path by scanning the tree (irmap), by default only a few fixed
    // dirs. The scan of the whole root mount is confined and bounded by install-criu.sh's patch 3.
    ...(irmapScanRoot(o.criu) ? ['--irmap-scan-path', '/'] : []),
    ...externals.flatMap((e) => ['--external', `mnt[${e.destination}]:${e.key}`]),
  ];
  // Written first: a dump that completes after the orchestrator died (criu outlives it) is restorable too.
  await writeFile(join(o.imagesDir, MANIFEST), JSON.stringify(manifest, null, 2));
  const code = await runCriu(o.criu, args, join(o.imagesDir, 'dump.log'));
  if (code !== 0) throw new CheckpointFailed(`criu dump exited ${code}`, await logTail(join(o.imagesDir, 'dump.log')));
  await removeNet(o.net);
  return { ms: Date.now() - started, imageBytes: await dirBytes(o.imagesDir) };
}

/**
 * The builds a checkpoint recorded, by name: only string values, for the caller to match against its own keys
 * (a restore never takes a path from the images). Empty for an image without them or an unreadable manifest, which
 * the restore itself then refuses.
 */
export async function checkpointBuilds(imagesDir: string): Promise<Record<string, string>> {
  const manifest = (await readFile(join(imagesDir, MANIFEST), 'utf8').then((t) => JSON.parse(t) as unknown, () => null)) as { builds?: unknown } | null;
  const out: Record<string, string> = {};
  const builds = manifest?.builds;
  if (builds && typeof builds === 'object') {
    for (const [k, v] of Object.entries(builds)) if (typeof v === 'string' && v.length <= 64) out[k] = v;
  }
  return out;
}

/**
 * A readable (0755) copy of an execute-only lent binary. CRIU maps a restored task's executable from
 * a file opened by the task itself, as root inside, which cannot read the 0711 original; the copy has
 * the same bytes (CRIU checks size), the mode check is skipped (--skip-file-rwx-check). envd and tini
 * keep their restored non-dumpable state and an mm owned by the host userns, so root inside still
 * cannot read their memory or environ.
 */
export async function readableCopy(source: string, dir: string): Promise<string> {
  const dest = join(dir, source.split('/').pop()!);
  const [src, cur] = await Promise.all([stat(source), stat(dest).catch(() => null)]);
  // The mode is part of "done": a copy left 0711 (as the source) passes the size and time check yet makes every
  // restore fail ("Can't open vma") until something replaces it.
  if (cur && cur.size === src.size && cur.mtimeMs >= src.mtimeMs && (cur.mode & 0o777) === 0o755) return dest;
  await mkdir(dir, { recursive: true, mode: 0o711 });
  // One temp name per call: concurrent restores (a burst of resumes) copy at once, and with a shared name one
  // renamed the file from under another's chmod (ENOENT) or published a copy still 0711 (the soak found both).
  const tmp = `${dest}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await copyFile(source, tmp);
    await chmod(tmp, 0o755);
    await rename(tmp, dest);
  } finally {
    await rm(tmp, { force: true });
  }
  return dest;
}

/**
 * Whether a dump into `imagesDir` completed: waits while a criu process still works on it (it outlives an
 * orchestrator killed mid-dump), then reads criu's own verdict, the last line of its log.
 */
export async function dumpCompleted(imagesDir: string, waitMs = 60_000): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline && (await criuWorkingOn(imagesDir))) await new Promise((r) => setTimeout(r, 50));
  const log = await readFile(join(imagesDir, 'dump.log'), 'utf8').catch(() => '');
  return /Dumping finished successfully/.test(log.slice(-4096));
}

async function criuWorkingOn(imagesDir: string): Promise<boolean> {
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const argv = cmd.split('\0');
    if (argv.includes('dump') && argv.includes(imagesDir)) return true;
  }
  return false;
}

export interface RestoreResult {
  /** Host pid of the restored PID 1 (tini). */
  initPid: number;
  ms: number;
  /** The daemon still serving the tree's memory, when restored lazily; its end must be watched. */
  lazy?: LazyPages;
  /** Milliseconds of the restore's own steps (for the caller's log). */
  steps: Record<string, number>;
}

/** Device nodes a dump may name as the source of crun's masks (binds of /dev/null) and device binds. */
const DEVICE_SOURCES = new Set(['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom', '/dev/tty']);

/**
 * The `--external` arguments of a restore. An image dir is an artifact (a downloaded snapshot), so no host path
 * is taken from it: each external mount's source is this node's own (`sources`, by destination), or one of a
 * fixed set of device nodes; keys and destinations must be what checkpointSlot writes. CheckpointFailed otherwise.
 */
export function externalArgs(externals: unknown, sources: Readonly<Record<string, string>>): string[] {
  if (!Array.isArray(externals) || externals.length > 256) throw new CheckpointFailed('untrusted checkpoint image', 'bad external mount list');
  const args: string[] = [];
  for (const e of externals as Array<Partial<ExternalMount>>) {
    const { key, destination, source } = e ?? {};
    if (typeof key !== 'string' || !/^m\d{1,3}$/.test(key) || typeof destination !== 'string' || !/^\/[^\0\]\[:,\n]{0,4095}$/.test(destination)) {
      throw new CheckpointFailed('untrusted checkpoint image', `bad external mount ${JSON.stringify(e).slice(0, 200)}`);
    }
    const own = Object.hasOwn(sources, destination) ? sources[destination] : typeof source === 'string' && DEVICE_SOURCES.has(source) ? source : undefined;
    if (!own) throw new CheckpointFailed('untrusted checkpoint image', `external mount ${destination} has no source on this node`);
    args.push('--external', `mnt[${key}]:${own}`);
  }
  return args;
}

/**
 * Restores a checkpoint over `rootfs` (the same overlay, or one built from a copy of its upper dir) and
 * into a new netns plumbed as `net`. `sources` are this node's host sources of the bind mounts, by
 * destination (its spec's binds, readable copies of the lent binaries): the only host paths a restore mounts.
 */
export async function restoreSlot(o: {
  criu: string;
  imagesDir: string;
  rootfs: string;
  net: SlotNet;
  sources: Readonly<Record<string, string>>;
  /** Cgroup the tree goes into instead of the one it was dumped from (another slot, another node). */
  cgroupRoot?: string;
  /** Established TCP connections come back closed (their peer and address are gone anyway). */
  tcpClose?: boolean;
  /** Where the restore's own files go (action script, pidfile, log); default the image dir. */
  workDir?: string;
  /**
   * Restore lazily (lazy-pages.ts): the tree runs before its memory is back, served by a daemon joined to
   * these cgroups (`cgroup.procs` files). Only for images this node dumped itself.
   */
  lazy?: { cgroupProcs: string[] };
}): Promise<RestoreResult> {
  const started = Date.now();
  let manifest: Manifest;
  try {
    manifest = JSON.parse(await readFile(join(o.imagesDir, MANIFEST), 'utf8')) as Manifest;
  } catch (err) {
    throw new CheckpointFailed('untrusted checkpoint image', `${MANIFEST} is unreadable: ${(err as Error).message}`);
  }
  // Checked before anything runs: a bad image never gets as far as criu.
  const externals = externalArgs(manifest?.externals, o.sources);
  const work = o.workDir ?? o.imagesDir;
  const script = join(work, 'cove-setup-net.sh');
  const pidfile = join(work, 'restored.pid');
  // The lazy-pages daemon (a second criu) starts while the restore's files and network are prepared: the restore
  // only needs it listening once criu connects. Cove's criu retries that connect (install-criu.sh patch 11), so the
  // restore starts without waiting for the daemon; another binary connects once, so it waits. Any failure ends it.
  const steps: Record<string, number> = {};
  const daemon = o.lazy ? startLazyPages({ criu: o.criu, imagesDir: o.imagesDir, workDir: work, cgroupProcs: o.lazy.cgroupProcs }) : undefined;
  void daemon?.then(() => (steps['lazyDaemonReady'] = Date.now() - started), () => undefined);
  const killDaemon = (): void => void daemon?.then((d) => d.kill(), () => undefined);
  try {
    await Promise.all([
      writeFile(script, ACTION_SCRIPT, { mode: 0o700 }),
      rm(pidfile, { force: true }),
      // A leftover netns/veth of the slot would make the action script's `ip link add` fail.
      removeNet(o.net),
    ]);
    const prepared = Date.now();
    steps['criuPrepare'] = prepared - started;
    if (daemon && !lazyConnectRetries(o.criu)) {
      await daemon;
      steps['lazyDaemonWait'] = Date.now() - prepared;
    }
  } catch (err) {
    killDaemon();
    throw err;
  }
  const args = [
    'restore', '-D', o.imagesDir, '--root', o.rootfs,
    '--manage-cgroups', '--tcp-established', '--empty-ns', 'net',
    // Without it criu reads the dumped locks and silently drops them.
    '--file-locks',
    ...(o.cgroupRoot ? ['--cgroup-root', o.cgroupRoot] : []),
    ...(o.tcpClose ? ['--tcp-close'] : []),
    '--skip-file-rwx-check',
    '--action-script', script,
    '--restore-detached', '--pidfile', pidfile,
    ...externals,
    // criu's own files (its stats; a lazy restore's daemon socket) go to the work dir, a directory of the node's
    // that the tree never sees, not into the images: those stay as the dump wrote them, for other restores from
    // them and for a fork's commit that reads them meanwhile.
    '-W', work,
    ...(daemon ? ['--lazy-pages'] : []),
  ];
  const log = await freshLog(work, 'restore');
  const criuStarted = Date.now();
  // A daemon that ends before criu's restore does (killed right after the pidfile was written) left criu waiting
  // in wait4 on its tasks for good, and the resume with it: criu is ended with the daemon, and the restore fails
  // (the caller then restores the whole image). A daemon that does not start ends it too (criu would otherwise wait
  // out its connect's bound).
  const daemonGone = daemon?.then((d) => d.done.then((outcome) => outcome !== 'served'), () => true);
  const code = await runCriu(o.criu, args, log, { ...netEnv(o.net), ...SCRIPT_ACTIONS_ENV }, daemonGone).catch((err: unknown) => (killDaemon(), Promise.reject(err)));
  steps['criuRestore'] = Date.now() - criuStarted;
  if (code !== 0) {
    killDaemon();
    await removeNet(o.net);
    throw new CheckpointFailed(`criu restore exited ${code}`, await logTail(log));
  }
  // criu connected, so the daemon listened. One that is nonetheless reported as not started ended right after: the
  // tree runs without its pages, and the caller's watch of a failed daemon kills it.
  const lazy = await daemon?.catch((): LazyPages => ({ pid: -1, done: Promise.resolve('failed'), kill: () => undefined }));
  const initPid = Number((await readFile(pidfile, 'utf8')).trim());
  return { initPid, ms: Date.now() - started, steps, ...(lazy ? { lazy } : {}) };
}
