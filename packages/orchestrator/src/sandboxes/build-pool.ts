// Warm slots of user-template builds: for the few builds used most recently (a Create from a build marks it),
// keep a small number of slots booted on the build's layers with its start/ready commands already done, so a
// Create from a user template costs what one from `base` does. Builds that fall out of the recent list lose
// their slots; failures back off per build and never reach a caller.

import type { VolumeMountSpec } from '../sandbox/slot-volumes.js';
import type { Logger } from 'pino';
import type { SandboxRuntime, SlotInfo } from '../sandbox/runtime.js';
import type { BuildManifest } from '../templates/manifest.js';
import type { TemplateResolver } from '../templates/resolver.js';
import { warmUpEnvd } from './envd-warmup.js';
import { runStartAndReady } from './template-start.js';
import { BootBackoff } from './boot-backoff.js';
import type { BootPermits } from './boot-permits.js';
import { PoolBoots, type PoolEntry } from './pool-boots.js';

export interface BuildPoolOptions {
  runtime: SandboxRuntime;
  resolver: TemplateResolver;
  /** Ready slots wanted per build. 0 disables the pool. */
  perBuild: number;
  /** How many most recently used builds keep slots. */
  builds: number;
  /** Boots in flight at once, over all builds. */
  concurrency: number;
  /** The node's bound on boots at once, shared with the other pools and with Creates (none: only `concurrency`). */
  permits?: BootPermits;
  readyTimeoutMs: number;
  log: Logger;
}

interface BuildEntry extends PoolEntry {
  templateId: string;
  buildId: string;
  manifest: BuildManifest;
}


/** Boots a slot of a build, ready to be claimed: layers, envd warm, start command running, ready passed. */
export async function bootBuildSlot(
  deps: { runtime: SandboxRuntime; resolver: TemplateResolver; readyTimeoutMs: number; log: Logger },
  templateId: string,
  buildId: string,
  opts: { diskMb: number; limits: { vcpu: number; memoryMb: number }; upperTar?: string; volumes?: VolumeMountSpec[] },
): Promise<SlotInfo> {
  const resolved = await deps.resolver.resolve(templateId, buildId);
  let slot: SlotInfo;
  try {
    slot = await deps.runtime.boot({ templateId, layers: resolved.layers, ...opts });
  } finally {
    // From here the slot's record keeps its layers from eviction.
    resolved.release();
  }
  try {
    const target = { address: slot.address, initToken: slot.initToken, user: resolved.manifest.user, workdir: resolved.manifest.workdir };
    await warmUpEnvd(target, deps.log).catch((err: unknown) => deps.log.debug({ err, slotId: slot.slotId }, 'envd warm-up failed'));
    await runStartAndReady({ address: slot.address, manifest: resolved.manifest, readyTimeoutMs: deps.readyTimeoutMs, log: deps.log });
    return slot;
  } catch (err) {
    await deps.runtime.destroy(slot.slotId).catch((e: unknown) => deps.log.error({ err: e, slotId: slot.slotId }, 'destroying a failed build slot failed'));
    throw err;
  }
}

export class BuildPool {
  /** Most recently used last. */
  private readonly entries = new Map<string, BuildEntry>();
  private closed = false;
  private readonly boots: PoolBoots;

  constructor(private readonly o: BuildPoolOptions) {
    this.boots = new PoolBoots({ ...o, what: 'warm build slot' }, () => this.fill());
  }

  /** Marks the build as just used: it (re)joins the recent list, the oldest beyond the limit lose their slots. */
  noteUse(manifest: BuildManifest): void {
    if (this.closed || this.o.perBuild === 0 || this.o.builds === 0) return;
    const existing = this.entries.get(manifest.buildId);
    if (existing) this.entries.delete(manifest.buildId);
    this.entries.set(
      manifest.buildId,
      existing ?? { templateId: manifest.templateId, buildId: manifest.buildId, manifest, ready: [], booting: 0, backoff: new BootBackoff() },
    );
    while (this.entries.size > this.o.builds) {
      const oldest = this.entries.keys().next().value as string;
      this.drop(oldest);
    }
    this.fill();
  }

  /** A ready slot of the build booted with `diskMb`, removed from the pool; undefined on a miss. */
  take(buildId: string, diskMb: number): SlotInfo | undefined {
    const e = this.entries.get(buildId);
    if (!e || e.manifest.diskMb !== diskMb) return undefined;
    const slot = e.ready.shift();
    if (slot) this.fill();
    return slot;
  }

  /** Forgets a build (deleted) and destroys its ready slots. */
  drop(buildId: string): void {
    const e = this.entries.get(buildId);
    if (!e) return;
    this.entries.delete(buildId);
    e.backoff.cancel();
    for (const s of e.ready.splice(0)) void this.boots.destroy(s);
  }

  slotIds(): Set<string> {
    const ids = new Set<string>();
    for (const e of this.entries.values()) for (const s of e.ready) ids.add(s.slotId);
    return ids;
  }

  stats(): Array<{ templateId: string; buildId: string; ready: number; target: number }> {
    return [...this.entries.values()].map((e) => ({ templateId: e.templateId, buildId: e.buildId, ready: e.ready.length, target: this.o.perBuild }));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const e of this.entries.values()) e.backoff.cancel();
    await this.boots.settle();
    const slots = [...this.entries.values()].flatMap((e) => e.ready.splice(0));
    this.entries.clear();
    await Promise.allSettled(slots.map((s) => this.boots.destroy(s)));
  }

  private fill(): void {
    if (this.closed) return;
    const now = Date.now();
    // Most recently used first.
    for (const e of [...this.entries.values()].reverse()) {
      while (this.boots.hasRoom && e.ready.length + e.booting < this.o.perBuild && e.backoff.allows(now)) this.bootOne(e);
    }
  }

  private bootOne(e: BuildEntry): void {
    const log = this.o.log.child({ templateId: e.templateId, buildId: e.buildId });
    this.boots.start(e, log, async () => {
      const slot = await bootBuildSlot({ ...this.o, log }, e.templateId, e.buildId, {
        diskMb: e.manifest.diskMb,
        // The start command runs while the slot waits: it gets the build's own limits, not an idle share.
        limits: { vcpu: e.manifest.vcpu, memoryMb: e.manifest.memoryMb },
      });
      if (this.closed || this.entries.get(e.buildId) !== e) {
        await this.boots.destroy(slot);
        return undefined;
      }
      return slot;
    });
  }
}
