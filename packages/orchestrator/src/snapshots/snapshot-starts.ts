// Starts from a snapshot on this node (SnapshotSlots.slotFor): a resume restores the paused slot in place when
// this node keeps it; otherwise a new slot is restored (or, cold, booted) from the snapshot's files — this node's
// own for a pause not yet committed, storage's verified copy for a committed one. A failed restore in place falls
// back to those files and never gives up what an uncommitted snapshot consists of (docs/pause-resume.md,
// "Invariant").

import type { Logger } from 'pino';
import { SnapshotRestoreFailed } from '../errors.js';
import type { SlotInfo } from '../sandbox/runtime.js';
import { bootBuildSlot } from '../sandboxes/build-pool.js';
import { readyBuiltinSlot } from '../sandboxes/template-start.js';
import type { InitDefaults } from '../sandboxes/sandbox-manager.js';
import type { ValidSpec } from '../sandboxes/validate-spec.js';
import type { CommitJob, CommitJobs } from './commit-jobs.js';
import type { DeferredCommits } from './deferred-commits.js';
import type { PausedSlots } from './paused-slots.js';
import type { SnapshotFiles } from './snapshot-files.js';
import { readSnapshotManifest } from './snapshot-manifest.js';
import { sameClaim, sourceOfIntent, type PausedSandbox, type SnapshotManagerOptions, type SnapshotSource, type StartedSlot } from './snapshot-types.js';
import { exportUpper } from './snapshot-upload.js';
import { BUILTIN_USER, BUILTIN_WORKDIR } from '../code-interpreter.js';

export class SnapshotStarts {
  constructor(
    private readonly o: SnapshotManagerOptions,
    private readonly files: SnapshotFiles,
    private readonly jobs: CommitJobs,
    private readonly paused: PausedSlots,
    private readonly deferred: DeferredCommits,
  ) {}

  /** The slot a Create with snapshot_id runs in, restored or booted from the snapshot. */
  async slotFor(spec: ValidSpec, log: Logger): Promise<StartedSlot> {
    const held = this.deferred.get(spec.snapshotId);
    if (held) {
      // A fork's copy on the source's node: from this node's files, never waiting for storage.
      const init = await this.initFor(held.intent, spec);
      return this.files.using(spec.snapshotId, async () => ({ slot: await this.startFromFiles(sourceOfIntent(held.intent), spec, spec.cold, log), init }));
    }
    const job = this.jobs.get(spec.snapshotId);
    if (job && job.intent.sandboxId === spec.sandboxId) return this.startUncommitted(job, spec, log);
    // Anyone else needs the committed snapshot (bounded: a storage outage answers SandboxBusy in seconds).
    if (job) await this.jobs.committed(job);
    const m = await readSnapshotManifest(this.o.blobs, spec.snapshotId);
    const cold = spec.cold || m.memory === null;
    if (!cold) {
      const started = await this.resumeInPlace(spec, m, log, false);
      if (started) return started;
    }
    const init = await this.initFor(m, spec);
    return this.files.using(m.snapshotId, async () => {
      await this.files.fetch(m, cold);
      return { slot: await this.startFromFiles(m, spec, cold, log), init };
    });
  }

  /**
   * The resume of a pause not committed yet: in place when possible, else into a new slot from this node's own
   * files of it — never waiting for storage. The paused slot, its files and the commit job stay until the snapshot
   * is committed or deleted (the control plane deletes it after a resume), so a failure here loses nothing and the
   * sandbox stays resumable.
   */
  private async startUncommitted(job: CommitJob, spec: ValidSpec, log: Logger): Promise<StartedSlot> {
    const { intent } = job;
    const { snapshotId, memory } = intent.pausing;
    const cold = spec.cold || !memory;
    if (!cold) {
      // Resumed before its commit finished: once it runs again the snapshot is stale, so the commit is dropped.
      const started = await this.resumeInPlace(spec, intent, log, true);
      if (started) {
        job.resumed = true;
        return started;
      }
    }
    const init = await this.initFor(intent, spec);
    const local = sourceOfIntent(intent);
    return this.files.using(snapshotId, async () => {
      await exportUpper(this.o.runtime, this.files, intent);
      return { slot: await this.startFromFiles(local, spec, cold, log), init };
    });
  }

  /**
   * The sandbox's own paused slot restored in place, when this node keeps it and the Create is its resume;
   * undefined otherwise, or when the restore failed: an uncommitted pause's slot is kept then (`uncommitted`),
   * a committed one's is destroyed with the local files, so the caller starts from storage's verified copy.
   */
  private async resumeInPlace(spec: ValidSpec, was: PausedSandbox, log: Logger, uncommitted: boolean): Promise<StartedSlot | undefined> {
    if (!this.paused.has(spec.snapshotId) || spec.sandboxId !== was.sandboxId) return undefined;
    const init = await this.initFor(was, spec);
    const slotId = this.paused.take(spec.snapshotId);
    if (!slotId) return undefined;
    try {
      await this.o.runtime.restore(slotId, this.files.imagesOf(spec.snapshotId));
      const slot = await this.o.runtime.slot(slotId);
      if (slot) return { slot, init, resumedInPlace: sameClaim(was, spec) ? was.envdVersion : undefined };
    } catch (err) {
      log.warn({ err, slotId, uncommitted }, 'restoring the paused slot in place failed; starting from the snapshot\'s files');
    }
    if (uncommitted) {
      this.paused.putBack(spec.snapshotId, slotId);
      return undefined;
    }
    await this.o.runtime.destroy(slotId).catch((err: unknown) => log.warn({ err, slotId }, 'destroying a paused slot failed'));
    await this.files.remove(spec.snapshotId);
    return undefined;
  }

  /** A new slot from the snapshot's local files (the caller made them present), once its turn for a boot comes. */
  private startFromFiles(m: SnapshotSource, spec: ValidSpec, cold: boolean, log: Logger): Promise<SlotInfo> {
    const start = () => this.newSlotFrom(m, spec, cold, log);
    return this.o.permits ? this.o.permits.run('create', start) : start();
  }

  private async newSlotFrom(m: SnapshotSource, spec: ValidSpec, cold: boolean, log: Logger): Promise<SlotInfo> {
    const opts = { diskMb: m.diskMb, limits: { vcpu: spec.vcpu, memoryMb: spec.memoryMb }, upperTar: this.files.upperOf(m.snapshotId) };
    if (cold) {
      // envd and the build's start command boot afresh on the snapshot's files.
      if (!m.buildId) {
        const slot = await this.o.runtime.boot({ templateId: m.templateId, ...opts });
        return readyBuiltinSlot({ runtime: this.o.runtime, readyTimeoutMs: this.o.readyTimeoutMs, log }, slot, { warmUp: false });
      }
      return bootBuildSlot({ runtime: this.o.runtime, resolver: this.o.resolver, readyTimeoutMs: this.o.readyTimeoutMs, log }, m.templateId, m.buildId, opts);
    }
    const build = m.buildId ? await this.o.resolver.resolve(m.templateId, m.buildId) : undefined;
    try {
      return await this.o.runtime.restoreSnapshot({
        templateId: m.templateId,
        ...(build ? { layers: build.layers } : {}),
        ...opts,
        imageDir: this.files.imagesOf(m.snapshotId),
        initToken: m.initToken,
      });
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'runtime_checkpoint_failed') throw err;
      throw new SnapshotRestoreFailed(m.snapshotId, (err as Error).message, { cause: err });
    } finally {
      build?.release();
    }
  }

  /** envd's /init for the new start: the build's defaults, the snapshot's env vars, then the Create's. */
  private async initFor(was: { templateId: string; buildId: string; envVars: Record<string, string> }, spec: ValidSpec): Promise<InitDefaults> {
    return { ...(await this.defaultsOf(was)), envVars: { ...was.envVars, ...spec.envVars } };
  }

  private async defaultsOf(m: { templateId: string; buildId: string }): Promise<InitDefaults> {
    if (!m.buildId) return { envVars: {}, user: BUILTIN_USER, workdir: BUILTIN_WORKDIR };
    const b = await this.o.resolver.manifest(m.templateId, m.buildId);
    return { envVars: {}, user: b.user, workdir: b.workdir };
  }
}
