// cgroup limits and usage for slots, on cgroup v1 (one hierarchy per controller, this project's hosts)
// and on pure cgroup v2. crun creates `/<parent>/<slot>` from the OCI spec; this module creates the
// parent, changes limits at claim (files written directly: crun 1.8 has no `update` for every field we
// need on v1) and reads usage. Slots live under one parent so the whole fleet can be found and bounded.

import { readFileSync } from 'node:fs';
import { access, mkdir, readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OnceUntilFailure } from '../once-until-failure.js';

const ROOT = '/sys/fs/cgroup';
const V1_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'cpuset', 'freezer', 'devices', 'blkio'] as const;

export type CgroupMode = 'v1' | 'v2';

export interface CgroupLimits {
  memoryBytes: number;
  /** CFS quota per period; vcpu × period. */
  cpuQuotaUs: number;
  cpuPeriodUs: number;
  pids: number;
}

/**
 * CPU weight, in cgroup v1 `cpu.shares` units (v2's `cpu.weight` is scaled from it: 1024 → 100, the defaults).
 * A warm slot boots at WARM (envd's start and warm-up, ~200 ms of CPU, would otherwise take half the cores from
 * a just-claimed sandbox's first commands); claim (and a restore) writes NORMAL. WARM is an eighth, not the floor (2):
 * a node whose sandboxes spin must still finish its boots within their timeout.
 */
export const CPU_SHARES = { NORMAL: 1024, WARM: 128 } as const;

export interface CgroupUsage {
  cpuUsageNs: bigint;
  memoryBytes: number;
  pids: number;
}

export async function detectCgroupMode(): Promise<CgroupMode> {
  return (await exists(join(ROOT, 'cgroup.controllers'))) ? 'v2' : 'v1';
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

async function readTrim(path: string): Promise<string> {
  return (await readFile(path, 'utf8')).trim();
}

export class Cgroups {
  constructor(
    readonly mode: CgroupMode,
    /** Parent cgroup name, e.g. 'cove'; slots are `<parent>/<slotId>`. */
    readonly parent: string,
  ) {}

  /** The cgroupsPath crun is given for a slot. */
  pathOf(slotId: string): string {
    return `/${this.parent}/${slotId}`;
  }

  private v1Dir(controller: string, slotId?: string): string {
    return slotId ? join(ROOT, controller, this.parent, slotId) : join(ROOT, controller, this.parent);
  }

  private v2Dir(slotId?: string): string {
    return slotId ? join(ROOT, this.parent, slotId) : join(ROOT, this.parent);
  }

  /** Every boot and restore asks for the parent; its ~30 file operations are done once. */
  private readonly parentMade = new OnceUntilFailure(() => this.createParent());

  /** Creates the parent cgroup(s) once per instance (again after removeParent, or after a failed try); idempotent. */
  prepareParent(): Promise<void> {
    return this.parentMade.run();
  }

  private async createParent(): Promise<void> {
    if (this.mode === 'v2') {
      await enableV2Controllers(ROOT);
      await mkdir(this.v2Dir(), { recursive: true });
      await enableV2Controllers(this.v2Dir());
      return;
    }
    for (const c of V1_CONTROLLERS) {
      if (!(await exists(join(ROOT, c)))) continue;
      const dir = this.v1Dir(c);
      await mkdir(dir, { recursive: true });
      if (c === 'cpuset') {
        // A v1 cpuset child starts empty and refuses tasks until cpus and mems are copied from its parent.
        for (const f of ['cpuset.cpus', 'cpuset.mems']) {
          if ((await readTrim(join(dir, f))) === '') await writeFile(join(dir, f), await readTrim(join(ROOT, c, f)));
        }
      }
      if (c === 'memory') {
        // Hierarchical accounting so limits on the parent (if an operator sets one) bound all slots.
        await writeFile(join(dir, 'memory.use_hierarchy'), '1').catch(() => undefined);
      }
    }
  }

  /** Raises or lowers a running slot's limits. */
  async setLimits(slotId: string, limits: CgroupLimits): Promise<void> {
    if (this.mode === 'v2') {
      const dir = this.v2Dir(slotId);
      await writeFile(join(dir, 'memory.max'), String(limits.memoryBytes));
      await writeFile(join(dir, 'memory.swap.max'), '0').catch(() => undefined);
      await writeFile(join(dir, 'cpu.max'), `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`);
      await writeFile(join(dir, 'pids.max'), String(limits.pids));
      await this.setCpuShares(slotId, CPU_SHARES.NORMAL);
      return;
    }
    const mem = this.v1Dir('memory', slotId);
    const limit = join(mem, 'memory.limit_in_bytes');
    const memsw = join(mem, 'memory.memsw.limit_in_bytes');
    const hasMemsw = await exists(memsw);
    const value = String(limits.memoryBytes);
    // memsw must stay >= limit: raise memsw first when growing, the plain limit first when shrinking.
    const current = Number(await readTrim(limit));
    const order = limits.memoryBytes >= current ? [memsw, limit] : [limit, memsw];
    for (const f of order) if (f !== memsw || hasMemsw) await writeFile(f, value);
    await writeFile(join(mem, 'memory.swappiness'), '0').catch(() => undefined);
    const cpu = this.v1Dir('cpu', slotId);
    await writeFile(join(cpu, 'cpu.cfs_period_us'), String(limits.cpuPeriodUs));
    await writeFile(join(cpu, 'cpu.cfs_quota_us'), String(limits.cpuQuotaUs));
    await writeFile(join(this.v1Dir('pids', slotId), 'pids.max'), String(limits.pids));
    await this.setCpuShares(slotId, CPU_SHARES.NORMAL);
  }

  /** The slot's CPU weight against the other slots (CPU_SHARES). */
  async setCpuShares(slotId: string, shares: number): Promise<void> {
    if (this.mode === 'v2') {
      await writeFile(join(this.v2Dir(slotId), 'cpu.weight'), String(Math.max(1, Math.round((shares * 100) / 1024))));
      return;
    }
    await writeFile(join(this.v1Dir('cpu', slotId), 'cpu.shares'), String(shares));
  }

  /**
   * Read synchronously: these are the kernel's counters (no disk behind them), a few microseconds each, where
   * an fs/promises read is five thread-pool round trips; the node reads them for every sandbox every 5 s.
   */
  usage(slotId: string): CgroupUsage {
    const read = (path: string) => readFileSync(path, 'utf8').trim();
    if (this.mode === 'v2') {
      const dir = this.v2Dir(slotId);
      const usec = /usage_usec (\d+)/.exec(read(join(dir, 'cpu.stat')))?.[1] ?? '0';
      return {
        cpuUsageNs: BigInt(usec) * 1000n,
        memoryBytes: Number(read(join(dir, 'memory.current'))),
        pids: Number(read(join(dir, 'pids.current'))),
      };
    }
    return {
      cpuUsageNs: BigInt(read(join(this.v1Dir('cpuacct', slotId), 'cpuacct.usage'))),
      memoryBytes: Number(read(join(this.v1Dir('memory', slotId), 'memory.usage_in_bytes'))),
      pids: Number(read(join(this.v1Dir('pids', slotId), 'pids.current'))),
    };
  }

  /** Host pids still in the slot's cgroup (pids controller on v1). */
  async pidsOf(slotId: string): Promise<number[]> {
    const file = this.mode === 'v2' ? join(this.v2Dir(slotId), 'cgroup.procs') : join(this.v1Dir('pids', slotId), 'cgroup.procs');
    try {
      return (await readFile(file, 'utf8')).split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  /** The `cgroup.procs` file of the slot's cgroup in every hierarchy that has one: writing a pid to each moves it in. */
  async procsFiles(slotId: string): Promise<string[]> {
    const out: string[] = [];
    for (const root of await this.hierarchies()) {
      const file = join(root, this.parent, slotId, 'cgroup.procs');
      if (await exists(file)) out.push(file);
    }
    return out;
  }

  /** SIGKILLs everything in the slot's cgroup (freezing first on v1 so a fork bomb cannot outrun it). */
  async killAll(slotId: string): Promise<void> {
    if (this.mode === 'v2') {
      const kill = join(this.v2Dir(slotId), 'cgroup.kill');
      if (await exists(kill)) {
        await writeFile(kill, '1');
        return;
      }
    }
    const freezer = this.mode === 'v1' ? join(this.v1Dir('freezer', slotId), 'freezer.state') : join(this.v2Dir(slotId), 'cgroup.freeze');
    const frozen = await writeFile(freezer, this.mode === 'v1' ? 'FROZEN' : '1').then(() => true, () => false);
    for (const pid of await this.pidsOf(slotId)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    if (frozen) await writeFile(freezer, this.mode === 'v1' ? 'THAWED' : '0').catch(() => undefined);
  }

  /** Removes the slot's cgroup directories; they must be empty of processes. Missing ones are fine. */
  async remove(slotId: string): Promise<void> {
    for (const root of await this.hierarchies()) await removeTree(join(root, this.parent, slotId));
  }

  /**
   * Removes the parent cgroup and whatever is left below it, in every hierarchy mounted under /sys/fs/cgroup
   * (crun creates the slot's cgroup in each, also in ones this module never writes: systemd, hugetlb, unified…); the slots must
   * hold no processes. Missing ones are fine.
   */
  async removeParent(): Promise<void> {
    this.parentMade.forget();
    for (const root of await this.hierarchies()) await removeTree(join(root, this.parent));
  }

  /** The root of every hierarchy the parent may live in: /sys/fs/cgroup itself on v2, each v1 mount on v1. */
  private async hierarchies(): Promise<string[]> {
    if (this.mode === 'v2') return [ROOT];
    // Real directories only: `cpu` → `cpu,cpuacct` style symlinks name the same hierarchy twice.
    const entries = await readdir(ROOT, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory()).map((e) => join(ROOT, e.name));
  }

  /** Slot ids that have a cgroup under the parent (for orphan cleanup). */
  async listSlotIds(): Promise<string[]> {
    const dir = this.mode === 'v2' ? this.v2Dir() : this.v1Dir('pids');
    try {
      const names = await readdir(dir);
      const out: string[] = [];
      for (const n of names) if ((await stat(join(dir, n))).isDirectory()) out.push(n);
      return out;
    } catch {
      return [];
    }
  }
}

/** rmdir of a cgroup directory and its child cgroups, deepest first (cgroupfs refuses a non-empty rmdir). */
async function removeTree(dir: string): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const e of entries) if (e.isDirectory()) await removeTree(join(dir, e.name));
  try {
    await rmdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

async function enableV2Controllers(dir: string): Promise<void> {
  const available = (await readTrim(join(dir, 'cgroup.controllers'))).split(' ');
  const want = ['cpu', 'memory', 'pids'].filter((c) => available.includes(c));
  if (want.length) await writeFile(join(dir, 'cgroup.subtree_control'), want.map((c) => `+${c}`).join(' '));
}
