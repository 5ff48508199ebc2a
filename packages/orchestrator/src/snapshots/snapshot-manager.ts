// Pause, persistent snapshots and starts from a snapshot on this node (docs/pause-resume.md, "Orchestrator"):
// the one object the rest of the orchestrator uses, wiring the parts that do the work —
//   pause.ts            pause and persistent snapshots of a running sandbox (intent first, then the dump)
//   commit-jobs.ts      committing a pause to cluster storage, retried until storage takes it
//   deferred-commits.ts a fork's snapshot: on this node's disk at once, committed only when asked
//   snapshot-starts.ts  Creates from a snapshot: in place, from this node's files, or from storage's copy
//   paused-slots.ts     paused slots kept on this node for resumes in place
//   snapshot-files.ts   the snapshot's files on this node, and their verified download
//   snapshot-recovery.ts  intents left by a previous run
//   snapshot-sweep.ts   dropping local files of deleted snapshots and beyond the cache bound
// Deleting snapshots is here: it touches all of them.

import type { Logger } from 'pino';
import { SnapshotCorrupt } from '../errors.js';
import type { SnapshotSlots } from '../sandboxes/sandbox-manager.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import type { ValidSpec } from '../sandboxes/validate-spec.js';
import { CommitJobs } from './commit-jobs.js';
import { DeferredCommits } from './deferred-commits.js';
import { Pauser } from './pause.js';
import { PausedSlots } from './paused-slots.js';
import { SnapshotBuilds } from './snapshot-builds.js';
import { SnapshotFiles } from './snapshot-files.js';
import { deleteUnreferenced } from './snapshot-gc.js';
import { readSnapshotManifest, SNAPSHOT_ID_RE, snapshotManifestKey } from './snapshot-manifest.js';
import { recoverPauses } from './snapshot-recovery.js';
import { SnapshotStarts } from './snapshot-starts.js';
import { SnapshotSweeper } from './snapshot-sweep.js';
import { artifactsOf, type PauseResult, type SnapshotCommit, type SnapshotManagerOptions, type StartedSlot } from './snapshot-types.js';

export type { PauseResult, SnapshotCommit, SnapshotManagerOptions, SnapshotSummary } from './snapshot-types.js';

export class SnapshotManager implements SnapshotSlots {
  private readonly files: SnapshotFiles;
  private readonly paused: PausedSlots;
  private readonly jobs: CommitJobs;
  private readonly deferred: DeferredCommits;
  private readonly pauser: Pauser;
  private readonly starts: SnapshotStarts;
  private readonly sweeper: SnapshotSweeper;

  constructor(private readonly o: SnapshotManagerOptions) {
    this.files = new SnapshotFiles(o.dataDir, o.blobs, new SnapshotBuilds(o.blobs, o.runtime, o.log));
    this.paused = new PausedSlots({ runtime: o.runtime, max: o.maxPausedSlots, uncommitted: (id) => this.jobs.has(id), log: o.log });
    this.jobs = new CommitJobs(o, this.files, this.paused);
    this.deferred = new DeferredCommits(o, this.files);
    this.pauser = new Pauser(o, this.files, this.jobs, this.deferred);
    this.starts = new SnapshotStarts(o, this.files, this.jobs, this.paused, this.deferred);
    this.sweeper = new SnapshotSweeper({
      o,
      files: this.files,
      busy: (id) => this.pauser.isActive(id) || this.jobs.has(id) || this.deferred.has(id) || this.files.isInUse(id) || this.paused.has(id),
      drop: (id) => this.dropLocal(id),
    });
  }

  /** Pauses not yet committed to cluster storage, and the commit attempts storage refused (telemetry). */
  commitStats(): { pending: number; refused: number } {
    return this.jobs.stats();
  }

  /** Paused sandboxes whose slot this node keeps (the node's paused count in telemetry). */
  pausedSlotCount(): number {
    return this.paused.size;
  }

  dirOf(snapshotId: string): string {
    return this.files.dirOf(snapshotId);
  }

  pause(sandboxId: string, snapshotId: string, memory: boolean): Promise<PauseResult> {
    return this.pauser.pause(sandboxId, snapshotId, memory);
  }

  /** A persistent snapshot: pause, then the sandbox runs on in place (restored right after the dump). */
  snapshot(sandboxId: string, snapshotId: string, commit: SnapshotCommit = 'now'): Promise<PauseResult & { record: SandboxRecord }> {
    return this.pauser.snapshot(sandboxId, snapshotId, commit);
  }

  /** SnapshotSlots: the slot a Create with snapshot_id runs in, restored or booted from the snapshot. */
  slotFor(spec: ValidSpec, log: Logger): Promise<StartedSlot> {
    return this.starts.slotFor(spec, log);
  }

  /** Removes snapshots from storage (manifest, then artifacts nothing else references) and from this node. */
  async delete(snapshotIds: string[]): Promise<void> {
    for (const id of snapshotIds) {
      if (!SNAPSHOT_ID_RE.test(id)) continue;
      // A deferred one is forgotten first (its commit, if one runs, settles): nothing starts from it any more.
      await this.deferred.drop(id);
      const job = this.jobs.get(id);
      if (job) {
        // Not committed yet: it never will be.
        await this.jobs.cancel(job);
        // Unless it runs again (resumed in place, or into a new slot from these files): its record is a running one's.
        if (!job.resumed && !this.o.manager.get(job.intent.sandboxId)) {
          await this.o.store.remove(job.intent.sandboxId).catch(() => undefined);
        }
        // A paused slot without memory is no cache (nothing restores into it): it goes with its snapshot.
        if (!job.resumed && !job.intent.pausing.memory) {
          await this.o.runtime.destroy(job.intent.slotId).catch((err: unknown) => this.o.log.warn({ err }, 'destroying a paused slot failed'));
        }
      }
      const m = await readSnapshotManifest(this.o.blobs, id).catch((err: unknown) => {
        if (err instanceof SnapshotCorrupt) return null;
        return undefined;
      });
      await this.o.blobs.delete(snapshotManifestKey(id));
      if (m) await deleteUnreferenced(this.o.blobs, this.files.builds.deletable(artifactsOf(m)), this.o.log);
      await this.dropLocal(id);
      this.o.log.info({ snapshotId: id }, 'snapshot deleted');
    }
  }

  private async dropLocal(snapshotId: string): Promise<void> {
    await this.paused.drop(snapshotId);
    await this.files.remove(snapshotId);
  }

  /**
   * After a restart: settles every sandbox record that carries a pause intent and re-registers paused slots kept
   * in place. Returns the slot ids to keep. Call after the running sandboxes were re-adopted, before orphan
   * clean-up.
   */
  recover(records: SandboxRecord[]): Promise<string[]> {
    return recoverPauses({ o: this.o, files: this.files, jobs: this.jobs, paused: this.paused, pauser: this.pauser }, records);
  }

  startSweeping(intervalMs: number): void {
    this.sweeper.start(intervalMs);
  }

  async stopSweeping(): Promise<void> {
    this.jobs.close();
    await this.sweeper.stop();
  }

  /** Drops local copies and paused slots of snapshots whose manifest is gone (deleted through another node). */
  sweep(): Promise<void> {
    return this.sweeper.sweep();
  }
}
