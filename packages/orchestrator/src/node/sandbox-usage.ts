// Per-sandbox resource use, sampled from each slot's cgroup through runtime.usage() every few seconds (E2B's
// orchestrator polls envd /metrics every 5 s; the cgroup is cheaper and cannot be faked from inside). CPU is
// the busy share of the sandbox's own vCPUs between two samples. Reported in Info (and so in heartbeats).

import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { SandboxManager } from '../sandboxes/sandbox-manager.js';

export const USAGE_SAMPLE_INTERVAL_MS = 5_000;

export interface SandboxUsageSample {
  sandboxId: string;
  cpuPercent: number;
  memoryUsedBytes: number;
  diskUsedBytes: number;
  pids: number;
  sampledAt: number;
}

interface Previous {
  slotId: string;
  cpuUsageNs: bigint;
  at: bigint;
}

export class SandboxUsageSampler {
  private readonly latest = new Map<string, SandboxUsageSample>();
  private readonly previous = new Map<string, Previous>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly runtime: SandboxRuntime,
    private readonly manager: SandboxManager,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.running ??= this.sample().finally(() => (this.running = undefined));
    }, USAGE_SAMPLE_INTERVAL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** The latest sample of every sandbox still on the node. */
  samples(): SandboxUsageSample[] {
    const live = new Set(this.manager.list().map((r) => r.sandboxId));
    return [...this.latest.values()].filter((s) => live.has(s.sandboxId));
  }

  async sample(): Promise<void> {
    const records = this.manager.list();
    const live = new Set(records.map((r) => r.sandboxId));
    for (const id of [...this.latest.keys()]) if (!live.has(id)) this.latest.delete(id);
    for (const id of [...this.previous.keys()]) if (!live.has(id)) this.previous.delete(id);
    await Promise.all(
      records.map(async (r) => {
        try {
          const u = await this.runtime.usage(r.slotId);
          const at = BigInt(Math.round(performance.now() * 1e6));
          const prev = this.previous.get(r.sandboxId);
          let cpuPercent = this.latest.get(r.sandboxId)?.cpuPercent ?? 0;
          if (prev && prev.slotId === r.slotId && at > prev.at) {
            const busy = Number(u.cpuUsageNs - prev.cpuUsageNs);
            cpuPercent = Math.min(100, Math.max(0, (100 * busy) / (Number(at - prev.at) * Math.max(1, r.vcpu))));
          }
          this.previous.set(r.sandboxId, { slotId: r.slotId, cpuUsageNs: u.cpuUsageNs, at });
          this.latest.set(r.sandboxId, {
            sandboxId: r.sandboxId,
            cpuPercent,
            memoryUsedBytes: u.memoryBytes,
            diskUsedBytes: u.diskUsedBytes,
            pids: u.pids,
            sampledAt: Date.now(),
          });
        } catch (err) {
          // The sandbox may be going away right now; the next sample settles it.
          this.log.debug({ err, sandboxId: r.sandboxId }, 'usage sample failed');
        }
      }),
    );
  }
}
