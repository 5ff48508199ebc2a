// A slot's processes to and from CRIU images on this node: the dump, the halt after it, the restore in place
// (lazily where the kernel and criu can), and the daemons serving a lazy restore's memory. The runtime checks the
// slot's state first and keeps the slot's other life (boot, claim, destroy) to itself.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Cgroups } from './cgroups.js';
import type { CrunCli } from './crun-cli.js';
import { checkpointBuilds, checkpointSlot, findCriu, restoreSlot, type RestoreResult, type SlotNet } from '../checkpoint/criu.js';
import { lazyRestoreSupported, type LazyOutcome } from '../checkpoint/lazy-pages.js';
import { waitHealthy } from './first-process.js';
import { applySandboxBudgets } from './kernel-budgets.js';
import { LazyPagesRegistry } from './lazy-pages-registry.js';
import type { LentBuilds, LentFiles } from './lent-files.js';
import { CheckpointError } from './runtime-errors.js';
import { settleAll } from './settle-all.js';
import { slotDiskPaths } from './slot-disk.js';
import { hostVethName, netnsName, type NodeNetConfig } from './slot-network.js';
import { envdOf, killSlotProcesses } from './slot-processes.js';
import { processStartTime, type SlotRecord, type SlotStore } from './slot-store.js';

export interface RestoreInPlace {
  ms: number;
  pid: number;
  lazy: boolean;
  /** Where the restore's time went, by step (docs/performance.md "Same-node resume, step by step"). */
  steps: Record<string, number>;
}

export interface SlotCheckpointDeps {
  log: Logger;
  slots: SlotStore;
  crun: CrunCli;
  lent: LentFiles;
  net: NodeNetConfig;
  /** The node's slot cgroups, their parent prepared. */
  cgroups: () => Promise<Cgroups>;
  bootTimeoutMs: number;
}

export class SlotCheckpoints {
  private readonly lazyPages: LazyPagesRegistry;

  constructor(private readonly d: SlotCheckpointDeps) {
    this.lazyPages = new LazyPagesRegistry(d.log, (slotId) => this.killTree(slotId));
  }

  /** Dumps a running slot's tree into `imageDir`; the tree keeps running. */
  async checkpoint(rec: SlotRecord, imageDir: string): Promise<{ ms: number; imageBytes: number }> {
    const { slotId } = rec;
    const criu = await findCriu();
    if (!criu) throw new CheckpointError(slotId, 'criu is not installed (scripts/install-criu.sh)');
    // A tree restored lazily is dumped once all its memory is back (bounded by the daemon's deadline).
    const lazy = await this.lazyPagesDone(slotId);
    if (lazy !== null && lazy !== 'served') throw new CheckpointError(slotId, `its lazy restore failed (${lazy})`);
    const dir = this.d.slots.dirOf(slotId);
    const initPid = await this.d.crun.pid(slotId);
    const spec = JSON.parse(await readFile(join(dir, 'bundle', 'config.json'), 'utf8')) as Record<string, unknown>;
    let result;
    try {
      result = await checkpointSlot({ criu, initPid, imagesDir: imageDir, rootfs: slotDiskPaths(dir).rootfs, spec, net: this.slotNet(rec), ...(rec.builds ? { builds: { ...rec.builds } } : {}) });
    } catch (err) {
      throw new CheckpointError(slotId, `checkpoint failed: ${(err as Error).message}`, { cause: err });
    }
    rec.checkpointDir = imageDir;
    await this.d.slots.write(rec);
    this.d.log.info({ slotId, ...result }, 'slot checkpointed');
    return result;
  }

  /** Ends a dumped slot's processes; its disk, network and images stay for a restore. */
  async halt(slotId: string): Promise<void> {
    const cgroups = await this.d.cgroups();
    this.lazyPages.stop(slotId);
    await this.d.crun.killAndDelete(slotId);
    if (!(await killSlotProcesses(cgroups, slotId))) throw new CheckpointError(slotId, 'the slot\'s processes did not die');
  }

  /** Restores a halted slot's tree from `imageDir` in place, and waits until its envd answers. */
  async restore(rec: SlotRecord, imageDir: string): Promise<RestoreInPlace> {
    const { slotId } = rec;
    const started = Date.now();
    const steps: Record<string, number> = {};
    let mark = started;
    const step = (name: string): void => {
      const now = Date.now();
      steps[name] = now - mark;
      mark = now;
    };
    const cgroups = await this.d.cgroups();
    const criu = await findCriu();
    if (!criu) throw new CheckpointError(slotId, 'criu is not installed (scripts/install-criu.sh)');
    const dir = this.d.slots.dirOf(slotId);
    // Independent reads, together: the spec's binds, the lent binaries' copies, the lazy probe (cached) and the cgroups.
    const [{ sources, builds }, lazy] = await Promise.all([
      readFile(join(dir, 'bundle', 'config.json'), 'utf8').then((text) => this.restoreSources(JSON.parse(text) as Record<string, unknown>, imageDir)),
      lazyRestoreSupported(criu).then(async (yes) => (yes ? { cgroupProcs: await cgroups.procsFiles(slotId) } : undefined)),
    ]);
    const opts = { criu, imagesDir: imageDir, rootfs: slotDiskPaths(dir).rootfs, net: this.slotNet(rec), sources, workDir: dir };
    step('prepare');
    let restored: RestoreResult;
    try {
      // Lazily when the kernel and criu can (the images are this node's own dump); any failure of that falls
      // back to the whole restore, so a resume is never lost to it.
      try {
        restored = await restoreSlot({ ...opts, ...(lazy ? { lazy } : {}) });
      } catch (err) {
        if (!lazy) throw err;
        this.d.log.warn({ err, slotId }, 'lazy restore failed; restoring the whole image');
        await killSlotProcesses(cgroups, slotId);
        restored = await restoreSlot(opts);
      }
    } catch (err) {
      throw new CheckpointError(slotId, `restore failed: ${(err as Error).message}`, { cause: err });
    }
    step('criu');
    const { initPid } = restored;
    if (restored.lazy) this.lazyPages.watch(slotId, initPid, restored.lazy);
    try {
      rec.pid = await envdOf(initPid, slotId);
      rec.pidStartTime = await processStartTime(rec.pid);
      rec.checkpointDir = null;
      rec.builds = builds;
      // The rest is independent and runs together; every part is settled before the resume answers or fails.
      await settleAll([
        // As in a restore from a snapshot; the sandbox runs on without them rather than be lost (the host totals
        // still hold).
        applySandboxBudgets(initPid, rec.pid).catch((err: unknown) => this.d.log.error({ err, slotId }, 'restored slot without its own kernel budgets')),
        this.d.slots.write(rec),
        // crun's record of the container points at the dumped PID 1; pointing it at the restored one keeps
        // `crun exec`/`kill` (exec(), destroy()) working.
        this.d.crun.repoint(slotId, initPid),
        waitHealthy(slotId, rec.address, rec.pid, rec.pidStartTime, this.d.bootTimeoutMs).then(() => step('health')),
      ]);
    } catch (err) {
      // A tree that came back but is not healthy must not run beside whatever the caller falls back to: it is
      // killed, and the slot is a dumped one again (its disk and images untouched), restorable once more.
      this.lazyPages.stop(slotId);
      await this.killTree(slotId);
      rec.checkpointDir = imageDir;
      await this.d.slots.write(rec).catch(() => undefined);
      throw err instanceof CheckpointError ? err : new CheckpointError(slotId, `restore failed: ${(err as Error).message}`, { cause: err });
    }
    step('settle');
    const ms = Date.now() - started;
    const all = { ...steps, ...restored.steps };
    this.d.log.info({ slotId, ms, steps: all, pid: rec.pid, lazy: !!restored.lazy }, 'slot restored');
    return { ms, pid: rec.pid, lazy: !!restored.lazy, steps: all };
  }

  /** Until a lazily restored slot has all its memory (or its daemon ended); at once otherwise. */
  async lazyPagesDone(slotId: string): Promise<LazyOutcome | null> {
    return this.lazyPages.done(slotId);
  }

  /** The pid of a slot's lazy-pages daemon while it serves; null otherwise. */
  lazyPagesPid(slotId: string): number | null {
    return this.lazyPages.pid(slotId);
  }

  /** Ends a slot's lazy-pages daemon on purpose (the slot's tree is being killed anyway). */
  stopLazy(slotId: string): void {
    this.lazyPages.stop(slotId);
  }

  /**
   * Host sources of a restore's bind mounts: this node's own (the slot's spec, written by this node; readable
   * copies of the lent binaries, of the builds the images recorded when this node keeps them), never the dumping
   * node's or the image's (criu.ts, externalArgs); and the builds the restored tree will run.
   */
  async restoreSources(spec: Record<string, unknown>, imageDir: string): Promise<{ sources: Record<string, string>; builds: LentBuilds }> {
    const sources: Record<string, string> = {};
    for (const m of spec['mounts'] as Array<{ type: string; destination: string; source: string }>) {
      if (m.type === 'bind') sources[m.destination] = m.source;
    }
    const lent = await this.d.lent.restoreBinaries(await checkpointBuilds(imageDir));
    return { sources: { ...sources, ...lent.sources }, builds: lent.builds };
  }

  /** The slot's network as CRIU re-creates it around a restored tree. */
  slotNet(rec: SlotRecord): SlotNet {
    return {
      netnsName: netnsName(this.d.net, rec.slotId),
      hostVeth: hostVethName(this.d.net, rec.slotId),
      addressCidr: `${rec.address}/${this.d.net.subnet.prefix}`,
      gateway: this.d.net.gateway,
    };
  }

  /** Kills every process of the slot's cgroup (crun's state stays: a restore repoints it). */
  private async killTree(slotId: string): Promise<void> {
    await killSlotProcesses(await this.d.cgroups(), slotId);
  }
}
