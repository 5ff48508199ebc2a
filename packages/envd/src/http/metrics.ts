import { readFile, statfs } from 'node:fs/promises';
import { cpus } from 'node:os';

interface CpuSample {
  idle: number;
  total: number;
}

async function cpuSample(): Promise<CpuSample> {
  const text = await readFile('/proc/stat', 'utf8');
  const line = text.split('\n', 1)[0];
  const nums = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (nums[3] ?? 0) + (nums[4] ?? 0);
  const total = nums.reduce((a, b) => a + b, 0);
  return { idle, total };
}

/**
 * `GET /metrics` body (E2B field names). CPU usage is measured between consecutive calls
 * (the orchestrator polls every few seconds); the first call reports usage since boot.
 */
export class MetricsReader {
  private last: CpuSample | undefined;

  async read(): Promise<Record<string, number>> {
    const [sample, meminfo, fsStat] = await Promise.all([
      cpuSample(),
      readFile('/proc/meminfo', 'utf8'),
      statfs('/').catch(() => undefined),
    ]);
    const prev = this.last ?? { idle: 0, total: 0 };
    this.last = sample;
    const dTotal = sample.total - prev.total;
    const dIdle = sample.idle - prev.idle;
    const cpuUsedPct = dTotal > 0 ? Math.round(((dTotal - dIdle) / dTotal) * 10000) / 100 : 0;

    const mem: Record<string, number> = {};
    for (const line of meminfo.split('\n')) {
      const m = /^(\w+):\s+(\d+)/.exec(line);
      if (m) mem[m[1]] = Number(m[2]) * 1024;
    }
    const total = mem.MemTotal ?? 0;
    const available = mem.MemAvailable ?? (mem.MemFree ?? 0) + (mem.Cached ?? 0);
    const used = Math.max(0, total - available);
    const cache = (mem.Cached ?? 0) + (mem.Buffers ?? 0);
    const diskTotal = fsStat ? fsStat.blocks * fsStat.bsize : 0;
    const diskUsed = fsStat ? (fsStat.blocks - fsStat.bfree) * fsStat.bsize : 0;
    return {
      ts: Math.floor(Date.now() / 1000),
      cpu_count: cpus().length,
      cpu_used_pct: cpuUsedPct,
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
