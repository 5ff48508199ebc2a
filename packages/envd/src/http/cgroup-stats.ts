import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';

/** What the sandbox's own cgroup says about its limits and usage (undefined where unknown). */
export interface CgroupStats {
  memLimit?: number;
  memUsage?: number;
  memInactiveFile?: number;
  memCache?: number;
  /** CPU quota in CPUs (e.g. 2 for 200000/100000). */
  cpuQuota?: number;
  /** Cumulative CPU time in nanoseconds. */
  cpuUsageNs?: number;
}

const ROOT = '/sys/fs/cgroup';
// Values at or above this mean "no limit" on cgroup v1 (PAGE_COUNTER_MAX * page size).
const V1_UNLIMITED = 2 ** 62;

const read = (p: string): Promise<string | undefined> => readFile(p, 'utf8').then((s) => s.trim(), () => undefined);

function num(s: string | undefined): number | undefined {
  if (s === undefined || s === '' || s === 'max') return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

function statField(text: string | undefined, key: string): number | undefined {
  const m = text?.match(new RegExp(`^${key} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
}

/** Directory of a controller: the cgroup path from /proc/self/cgroup if mounted there, else the mount root (cgroup namespace). */
async function dirFor(mount: string, rel: string | undefined): Promise<string> {
  if (rel && rel !== '/') {
    const candidate = posix.join(mount, rel);
    if ((await read(posix.join(candidate, 'cgroup.procs'))) !== undefined) return candidate;
  }
  return mount;
}

/**
 * Reads memory and CPU figures of envd's own cgroup, on cgroup v2 or v1 hierarchies. Inside a
 * sandbox these are the sandbox's limits, which /proc/meminfo and /proc/stat (host-wide) are not.
 */
export async function readCgroupStats(): Promise<CgroupStats> {
  const self = (await read('/proc/self/cgroup')) ?? '';
  const v1 = new Map<string, string>();
  let v2: string | undefined;
  for (const line of self.split('\n')) {
    const [id, ctrls, path] = line.split(':');
    if (path === undefined) continue;
    if (id === '0' && ctrls === '') v2 = path;
    for (const c of ctrls.split(',')) if (c) v1.set(c, path);
  }
  const out: CgroupStats = {};
  if (v1.has('memory')) {
    const dir = await dirFor(posix.join(ROOT, 'memory'), v1.get('memory'));
    const limit = num(await read(posix.join(dir, 'memory.limit_in_bytes')));
    if (limit !== undefined && limit < V1_UNLIMITED) out.memLimit = limit;
    out.memUsage = num(await read(posix.join(dir, 'memory.usage_in_bytes')));
    const stat = await read(posix.join(dir, 'memory.stat'));
    out.memInactiveFile = statField(stat, 'total_inactive_file') ?? statField(stat, 'inactive_file');
    out.memCache = statField(stat, 'total_cache') ?? statField(stat, 'cache');
  } else if (v2 !== undefined) {
    const dir = await dirFor(ROOT, v2);
    out.memLimit = num(await read(posix.join(dir, 'memory.max')));
    out.memUsage = num(await read(posix.join(dir, 'memory.current')));
    const stat = await read(posix.join(dir, 'memory.stat'));
    out.memInactiveFile = statField(stat, 'inactive_file');
    out.memCache = statField(stat, 'file');
  }
  if (v1.has('cpu') || v1.has('cpuacct')) {
    const cpuDir = await dirFor(posix.join(ROOT, 'cpu'), v1.get('cpu'));
    const quota = num(await read(posix.join(cpuDir, 'cpu.cfs_quota_us')));
    const period = num(await read(posix.join(cpuDir, 'cpu.cfs_period_us')));
    if (quota !== undefined && quota > 0 && period) out.cpuQuota = quota / period;
    const acctDir = await dirFor(posix.join(ROOT, 'cpuacct'), v1.get('cpuacct'));
    out.cpuUsageNs = num(await read(posix.join(acctDir, 'cpuacct.usage')));
  } else if (v2 !== undefined) {
    const dir = await dirFor(ROOT, v2);
    const [quota, period] = ((await read(posix.join(dir, 'cpu.max'))) ?? 'max').split(' ');
    const q = num(quota);
    const p = num(period);
    if (q !== undefined && p) out.cpuQuota = q / p;
    const usec = statField(await read(posix.join(dir, 'cpu.stat')), 'usage_usec');
    if (usec !== undefined) out.cpuUsageNs = usec * 1000;
  }
  return out;
}
