import { readFile, statfs } from 'node:fs/promises';
import { cpus } from 'node:os';
import { readCgroupStats } from './cgroup-stats.js';

interface CpuSample {
  /** Wall or CPU-time ticks, depending on source; only deltas are used. */
  busy: number;
  total: number;
}

async function procCpuSample(): Promise<CpuSample> {
  const text = await readFile('/proc/stat', 'utf8');
  const nums = text.split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = (nums[3] ?? 0) + (nums[4] ?? 0);
  const total = nums.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/**
 * `GET /metrics` body (E2B field names), polled by the orchestrator. Figures come from the
 * sandbox's own cgroup where it has one (limits, usage), else from /proc (host-wide);
 * CPU usage is measured between consecutive calls (the first call: since boot / cgroup start).
 */
export class MetricsReader {
  private lastProc: CpuSample | undefined;
  private lastCgroup: { usageNs: number; atNs: bigint } | undefined;

  async read(): Promise<Record<string, number>> {
    const [procSample, meminfo, fsStat, cg] = await Promise.all([
      procCpuSample(),
      readFile('/proc/meminfo', 'utf8'),
      statfs('/').catch(() => undefined),
      readCgroupStats().catch(() => ({}) as Awaited<ReturnType<typeof readCgroupStats>>),
    ]);
    const hostCpus = cpus().length;
    const cpuCount = cg.cpuQuota ? Math.max(1, Math.min(hostCpus, Math.ceil(cg.cpuQuota))) : hostCpus;

    let cpuUsedPct: number;
    if (cg.cpuUsageNs !== undefined) {
      const now = process.hrtime.bigint();
      const prev = this.lastCgroup;
      this.lastCgroup = { usageNs: cg.cpuUsageNs, atNs: now };
      const wallNs = prev ? Number(now - prev.atNs) : 0;
      const usedNs = prev ? cg.cpuUsageNs - prev.usageNs : 0;
      cpuUsedPct = wallNs > 0 ? Math.min(100, (usedNs / (wallNs * cpuCount)) * 100) : 0;
    } else {
      const prev = this.lastProc ?? { busy: 0, total: 0 };
      const dTotal = procSample.total - prev.total;
      cpuUsedPct = dTotal > 0 ? ((procSample.busy - prev.busy) / dTotal) * 100 : 0;
    }
    this.lastProc = procSample;

    const mem: Record<string, number> = {};
    for (const line of meminfo.split('\n')) {
      const m = /^(\w+):\s+(\d+)/.exec(line);
      if (m) mem[m[1]] = Number(m[2]) * 1024;
    }
    const hostTotal = mem.MemTotal ?? 0;
    let total = hostTotal;
    let used = Math.max(0, hostTotal - (mem.MemAvailable ?? (mem.MemFree ?? 0) + (mem.Cached ?? 0)));
    let cache = (mem.Cached ?? 0) + (mem.Buffers ?? 0);
    if (cg.memUsage !== undefined) {
      if (cg.memLimit !== undefined) total = Math.min(hostTotal, cg.memLimit);
      // Like `docker stats`: reclaimable inactive page cache is not "used".
      used = Math.max(0, cg.memUsage - (cg.memInactiveFile ?? 0));
      if (cg.memCache !== undefined) cache = cg.memCache;
    }
    const diskTotal = fsStat ? fsStat.blocks * fsStat.bsize : 0;
    const diskUsed = fsStat ? (fsStat.blocks - fsStat.bfree) * fsStat.bsize : 0;
    return {
      ts: Math.floor(Date.now() / 1000),
      cpu_count: cpuCount,
      cpu_used_pct: Math.round(cpuUsedPct * 100) / 100,
      mem_total: total,
      mem_used: used,
      mem_cache: cache,
      mem_total_mib: Math.floor(total / 1048576),
      mem_used_mib: Math.floor(used / 1048576),
      disk_used: diskUsed,
      disk_total: diskTotal,
    };
  }
}
