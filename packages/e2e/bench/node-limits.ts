// The kernel and runtime limits one node's idle sandboxes use up, read on the host (`cove bench --density` runs
// the node on this machine, as root): for each, what is in use now and the limit it counts against, so the density
// bench can say which one stops the node first and at how many sandboxes.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { cores, cpuTicks } from './machine-cpu.js';

export interface LimitUse {
  /** Stable key (the JSON's): no deployment's names in it (bridge, subnet: those go in `of`). */
  key: string;
  used: number;
  /** What it counts against; undefined when nothing bounds it (said as such, not as a number). */
  limit: number | undefined;
  /** Where the limit comes from, in a few words. */
  of: string;
}

const read = (f: string) => readFileSync(f, 'utf8');

/** The host's ticks so far: busy (all but idle and iowait) and all. */
const hostTicks = (): { busy: number; all: number } => {
  const t = cpuTicks();
  return { busy: t.all - t.idle - t.iowait, all: t.all };
};
const num = (f: string) => Number(read(f).trim().split(/\s+/)[0]);
const tryRead = (f: string): string | undefined => {
  try {
    return read(f);
  } catch {
    return undefined;
  }
};

/** /proc/meminfo in KiB. */
export function meminfo(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of read('/proc/meminfo').split('\n')) {
    const m = /^(\S+):\s+(\d+)/.exec(l);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

const pids = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p));

/** Open fds of every process we may look at: (pid, fd, link target). Processes we cannot read are skipped. */
function fdLinks(): Array<{ pid: string; fd: string; target: string }> {
  const out: Array<{ pid: string; fd: string; target: string }> = [];
  for (const pid of pids()) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        out.push({ pid, fd, target: readlinkSync(`/proc/${pid}/fd/${fd}`) });
      } catch {
        // closed meanwhile
      }
    }
  }
  return out;
}

/** Distinct namespaces of one type among all processes. */
function namespaces(type: 'user' | 'net' | 'mnt' | 'pid'): number {
  const seen = new Set<string>();
  for (const pid of pids()) {
    try {
      seen.add(readlinkSync(`/proc/${pid}/ns/${type}`));
    } catch {
      // gone, or not ours to read
    }
  }
  return seen.size;
}

/** The `memory` line of /proc/cgroups (v1) or the count of cgroups below the v2 root. */
function memoryCgroups(): number {
  const line = read('/proc/cgroups').split('\n').find((l) => l.startsWith('memory\t'));
  return line ? Number(line.split('\t')[2]) : 0;
}

/** Keys and key bytes charged to a host uid (/proc/key-users: "uid: usage nkeys/nikeys qnkeys/maxkeys qnbytes/maxbytes"). */
function keyUse(uid: number): { keys: number; maxKeys: number; bytes: number; maxBytes: number } | undefined {
  const line = tryRead('/proc/key-users')?.split('\n').find((l) => l.trim().startsWith(`${uid}:`));
  const m = line && /(\d+)\/(\d+)\s+(\d+)\/(\d+)\s*$/.exec(line);
  return m ? { keys: Number(m[1]), maxKeys: Number(m[2]), bytes: Number(m[3]), maxBytes: Number(m[4]) } : undefined;
}

export interface NodeNames {
  bridge: string;
  instance: string;
  vethPrefix: string;
  subnet: string;
  /** The orchestrator's pid (its fds against its RLIMIT_NOFILE). */
  orchestratorPid: number;
  /** Host uid root inside a sandbox maps to (its keys are charged there). */
  sandboxRootUid: number;
  /** The node's data dir (slot disks are sparse files there). */
  dataDir: string;
}

/** Soft RLIMIT_NOFILE of a process. */
function nofileOf(pid: number): number {
  const m = /^Max open files\s+(\S+)/m.exec(read(`/proc/${pid}/limits`));
  return m?.[1] === 'unlimited' ? Infinity : Number(m?.[1]);
}

/** Every candidate limit, used against its ceiling. Slow-ish (walks /proc): taken before and after the load only. */
export function limitCensus(n: NodeNames): LimitUse[] {
  const out: LimitUse[] = [];
  const add = (key: string, used: number, limit: number | undefined, of: string) => out.push({ key, used, limit, of });

  // Every task (thread) takes a pid from the one host pid space: kernel.pid_max bounds them, threads-max too.
  const tasks = Number(read('/proc/loadavg').split(' ')[3]!.split('/')[1]);
  add('tasks vs kernel.pid_max', tasks, num('/proc/sys/kernel/pid_max'), 'kernel.pid_max (host pid space, every thread)');
  add('tasks vs kernel.threads-max', tasks, num('/proc/sys/kernel/threads-max'), 'kernel.threads-max');
  const pidsCg = ['/sys/fs/cgroup/pids', '/sys/fs/cgroup'].map((r) => join(r, n.instance)).find((d) => existsSync(join(d, 'pids.current')));
  if (pidsCg) {
    const max = read(join(pidsCg, 'pids.max')).trim();
    add("tasks in the node's pids cgroup", num(join(pidsCg, 'pids.current')), max === 'max' ? undefined : Number(max), `${pidsCg}/pids.max`);
  }

  const links = fdLinks();
  const [fdsOpen, , fileMax] = read('/proc/sys/fs/file-nr').trim().split(/\s+/).map(Number);
  add('open files vs fs.file-max', fdsOpen!, fileMax!, 'fs.file-nr / fs.file-max');
  const orchFds = existsSync(`/proc/${n.orchestratorPid}/fd`) ? readdirSync(`/proc/${n.orchestratorPid}/fd`).length : 0;
  add("orchestrator's fds vs its RLIMIT_NOFILE", orchFds, nofileOf(n.orchestratorPid), 'soft RLIMIT_NOFILE of the orchestrator');

  // inotify: every sandbox's user namespace is owned by host root (crun's euid), so instances and watches are
  // charged up the chain to (init namespace, uid 0): the host's max_user_* are the shared budget.
  const inotify = links.filter((l) => l.target === 'anon_inode:inotify');
  let watches = 0;
  for (const l of inotify) {
    const info = tryRead(`/proc/${l.pid}/fdinfo/${l.fd}`);
    if (info) watches += info.split('\n').filter((x) => x.startsWith('inotify wd:')).length;
  }
  add('inotify instances (charged to host uid 0)', inotify.length, num('/proc/sys/fs/inotify/max_user_instances'), 'fs.inotify.max_user_instances');
  add('inotify watches (charged to host uid 0)', watches, num('/proc/sys/fs/inotify/max_user_watches'), 'fs.inotify.max_user_watches');

  // mount-max is per mount namespace: the host's (every slot's rootfs, loop disk and binds are mounted there).
  add('mounts in the host namespace vs fs.mount-max', read('/proc/self/mountinfo').split('\n').filter(Boolean).length, num('/proc/sys/fs/mount-max'), 'fs.mount-max (per namespace)');

  const loops = (JSON.parse(execFileSync('losetup', ['-J', '-l'], { encoding: 'utf8' }) || '{"loopdevices":[]}') as { loopdevices: unknown[] }).loopdevices.length;
  // Loop devices are made on demand (loop-control); the block layer's minor numbers bound them (MINORBITS = 20).
  add('loop devices', loops, 1 << 20, 'loop minors (2^20; max_loop unset)');

  const brif = `/sys/class/net/${n.bridge}/brif`;
  const ports = existsSync(brif) ? readdirSync(brif).length : 0;
  // net/bridge: BR_MAX_PORTS = 1 << 10 and port number 0 is never given out.
  add('ports on the node bridge', ports, 1023, `BR_MAX_PORTS (1024, port 0 reserved) on ${n.bridge}`);
  const veths = readdirSync('/sys/class/net').filter((l) => l.startsWith(n.vethPrefix)).length;
  const prefix = Number(n.subnet.split('/')[1]);
  add('sandbox addresses in the node subnet', veths, 2 ** (32 - prefix) - 3, `${n.subnet} less network, gateway, broadcast`);
  // One ARP table for the whole host, every netns included (the sandboxes' own entries for their gateway too):
  // /proc/net/stat/arp_cache gives its entries (the table's, on every per-cpu line) and overflows (per cpu).
  const arp = read('/proc/net/stat/arp_cache').trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/).map((h) => parseInt(h, 16)));
  add('IPv4 neighbour entries (all namespaces) vs gc_thresh3', arp[0]?.[0] ?? 0, num('/proc/sys/net/ipv4/neigh/default/gc_thresh3'), 'net.ipv4.neigh.default.gc_thresh3 (hard cap, whole host)');
  add('IPv4 neighbour table overflows', arp.reduce((a, l) => a + (l[12] ?? 0), 0), undefined, 'table_fulls since boot (must not grow)');
  const ct = tryRead('/proc/sys/net/netfilter/nf_conntrack_count');
  if (ct) add('conntrack entries', Number(ct.trim()), num('/proc/sys/net/netfilter/nf_conntrack_max'), 'net.netfilter.nf_conntrack_max');

  let elements = 0;
  const ruleset = (JSON.parse(execFileSync('nft', ['-j', 'list', 'ruleset'], { encoding: 'utf8', maxBuffer: 256 << 20 })) as { nftables: Array<Record<string, { table?: string; elem?: unknown[] }>> }).nftables;
  for (const e of ruleset) {
    const s = e.set ?? e.map;
    if (s?.table === n.instance) elements += s.elem?.length ?? 0;
  }
  add("nft set elements in the node's tables", elements, undefined, 'no fixed cap (sets are unsized)');

  // Memory cgroup ids are 16 bits (MEM_CGROUP_ID_MAX = 65535), counting cgroups still dying.
  add('memory cgroups', memoryCgroups(), 65535, 'MEM_CGROUP_ID_MAX');

  for (const t of ['user', 'net', 'mnt'] as const) {
    add(`${t} namespaces`, namespaces(t), num(`/proc/sys/user/max_${t === 'mnt' ? 'mnt' : t}_namespaces`), `user.max_${t}_namespaces (charged to host uid 0)`);
  }

  // crun gives each sandbox a session keyring of its own, made before it switches to the sandbox's uid: charged
  // to host root (root_maxkeys), not to the sandbox's uids (maxkeys, 200 each): both are watched.
  for (const [uid, who] of [[0, 'host root'], [n.sandboxRootUid, 'sandbox root']] as const) {
    const k = keyUse(uid);
    const sys = uid === 0 ? 'root_max' : 'max';
    add(`keys of host uid ${uid} (${who})`, k?.keys ?? 0, k?.maxKeys ?? num(`/proc/sys/kernel/keys/${sys}keys`), `kernel.keys.${sys}keys (per uid)`);
    add(`key bytes of host uid ${uid} (${who})`, k?.bytes ?? 0, k?.maxBytes ?? num(`/proc/sys/kernel/keys/${sys}bytes`), `kernel.keys.${sys}bytes (per uid)`);
  }
  const fs = statfsSync(n.dataDir);
  add("MiB used on the node data dir's filesystem", Math.round(((fs.blocks - fs.bavail) * fs.bsize) / 2 ** 20), Math.round((fs.blocks * fs.bsize) / 2 ** 20), 'its size (slot disks are sparse)');
  const ptys = num('/proc/sys/kernel/pty/nr');
  add('ptys', ptys, num('/proc/sys/kernel/pty/max'), 'kernel.pty.max');
  return out;
}

/** CPU the whole host and one process spend over `ms`, in percent of one core (200 = both cores of 2). */
export async function cpuOver(ms: number, pid: number): Promise<{ host: number; process: number }> {
  const procTicks = () => {
    const f = read(`/proc/${pid}/stat`).replace(/^.*\) /, '').split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const h0 = hostTicks();
  const p0 = procTicks();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const h1 = hostTicks();
  const p1 = procTicks();
  const seconds = (performance.now() - t0) / 1000;
  const hz = 100;
  return { host: ((h1.busy - h0.busy) / (h1.all - h0.all)) * 100 * cores, process: ((p1 - p0) / hz / seconds) * 100 };
}

/** One sandbox's processes seen from the host: name, threads and memory (smaps_rollup), by its pid namespace. */
export function sandboxProcesses(pidNs: string): Array<{ pid: number; comm: string; threads: number; rssKiB: number; pssKiB: number; pssAnonKiB: number; pssFileKiB: number }> {
  const out = [];
  for (const pid of pids()) {
    try {
      if (readlinkSync(`/proc/${pid}/ns/pid`) !== pidNs) continue;
      const roll = read(`/proc/${pid}/smaps_rollup`);
      const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(roll)?.[1] ?? 0);
      out.push({
        pid: Number(pid),
        comm: read(`/proc/${pid}/comm`).trim(),
        threads: Number(/^Threads:\s+(\d+)/m.exec(read(`/proc/${pid}/status`))?.[1] ?? 0),
        rssKiB: kb('Rss'),
        pssKiB: kb('Pss'),
        pssAnonKiB: kb('Pss_Anon'),
        pssFileKiB: kb('Pss_File'),
      });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * CPU over `ms` by who spends it, in percent of one core: each process's utime+stime (its threads included) at
 * both ends, grouped by `groupOf(pid, cmdline)`; pids that came or went meanwhile count from what is seen. The
 * host's total beside it (kernel threads and everything this view of /proc does not show are in it, not in a group).
 */
export async function cpuByGroup(ms: number, groupOf: (pid: number, cmdline: string) => string): Promise<{ host: number; groups: Map<string, number> }> {
  const snap = () => {
    const out = new Map<number, { ticks: number; group: string }>();
    for (const pid of pids()) {
      try {
        const f = read(`/proc/${pid}/stat`).replace(/^.*\) /, '').split(' ');
        const cmd = read(`/proc/${pid}/cmdline`).replace(/\0/g, ' ').trim();
        out.set(Number(pid), { ticks: Number(f[11]) + Number(f[12]), group: groupOf(Number(pid), cmd) });
      } catch {
        // gone meanwhile
      }
    }
    return out;
  };
  const a = snap();
  const h0 = hostTicks();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const b = snap();
  const h1 = hostTicks();
  const seconds = (performance.now() - t0) / 1000;
  const groups = new Map<string, number>();
  for (const [pid, x] of b) {
    const spent = x.ticks - (a.get(pid)?.ticks ?? 0);
    groups.set(x.group, (groups.get(x.group) ?? 0) + (spent / 100 / seconds) * 100);
  }
  return { host: ((h1.busy - h0.busy) / (h1.all - h0.all)) * 100 * cores, groups };
}
