// Host figures for Info: CPU busy percent from /proc/stat deltas between two samples, memory in use
// from /proc/meminfo (total − available, what the kernel could not hand out without swapping), and
// the size and use of the filesystem that holds the data directory.

import { readFile, statfs } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';

interface CpuSample {
  idle: number;
  total: number;
}

async function readCpuSample(): Promise<CpuSample> {
  const text = await readFile('/proc/stat', 'utf8');
  const line = text.split('\n', 1)[0] ?? '';
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  // guest and guest_nice are already counted in user and nice.
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { idle, total };
}

export class HostStats {
  private last: CpuSample | undefined;
  private lastPercent = 0;

  readonly cpuCount = Math.max(1, cpus().length);
  readonly memoryBytes = totalmem();

  constructor(private readonly dataDir: string) {}

  /** Busy percent (0–100 over all CPUs) since the previous call; 0 on the first. */
  async cpuPercent(): Promise<number> {
    const now = await readCpuSample();
    const prev = this.last;
    this.last = now;
    if (!prev) return this.lastPercent;
    const total = now.total - prev.total;
    // Two calls within one clock tick see no progress; keep the previous figure rather than report 0.
    if (total <= 0) return this.lastPercent;
    this.lastPercent = Math.min(100, Math.max(0, (100 * (total - (now.idle - prev.idle))) / total));
    return this.lastPercent;
  }

  async memoryUsedBytes(): Promise<number> {
    const text = await readFile('/proc/meminfo', 'utf8');
    const kb = (key: string): number => {
      const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(text);
      return m ? Number(m[1]) * 1024 : 0;
    };
    return Math.max(0, kb('MemTotal') - kb('MemAvailable'));
  }

  async disk(): Promise<{ totalBytes: number; usedBytes: number }> {
    const s = await statfs(this.dataDir);
    return { totalBytes: s.blocks * s.bsize, usedBytes: (s.blocks - s.bfree) * s.bsize };
  }
}
