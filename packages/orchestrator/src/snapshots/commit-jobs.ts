// Commit jobs: a pause answers once the sandbox's state is on this node's disk; its job then stores the artifacts
// and writes the manifest (the commit point for every other node), retrying until storage takes them. Until
// then everything the commit needs stays here (docs/pause-resume.md, "Invariant"): the intent record (with envd's
// init token), the snapshot's files and the paused slot.

import { SandboxBusy, SnapshotNotFound } from '../errors.js';
import type { PausedSlots } from './paused-slots.js';
import type { SnapshotFiles } from './snapshot-files.js';
import type { SnapshotManifest } from './snapshot-manifest.js';
import type { Intent, SnapshotManagerOptions } from './snapshot-types.js';
import { commitSnapshot } from './snapshot-upload.js';

/** A pause whose snapshot is on this node's disk and not yet committed to cluster storage. */
export interface CommitJob {
  intent: Intent;
  /** Settles once the manifest is in storage (or the snapshot was deleted first: rejects then). */
  committed: Promise<SnapshotManifest>;
  /** The sandbox was resumed in place meanwhile: its record is a running sandbox's again. */
  resumed: boolean;
  /** DeleteSnapshots came first: do not commit. */
  deleted: boolean;
  /** Ends a wait between attempts early (a delete, or a caller waiting for the commit, need not sit out a retry delay). */
  wake?: (() => void) | undefined;
  /** Attempts that failed so far (the job ends at its first success). */
  failures: number;
  /** Told of each failed attempt: the callers waiting for the commit. */
  onFailure: Set<(err: unknown) => void>;
}

/** Before a commit starts (see run). */
const COMMIT_DELAY_MS = 300;
/** Waits between commit attempts: quick at first (a storage hiccup), then once a minute. */
const COMMIT_RETRY_MS = [1000, 2000, 5000, 10_000, 30_000, 60_000];
/**
 * How long a caller that needs the committed snapshot (a repeated Pause, a Create of another sandbox) waits for a
 * pending commit before it gets SandboxBusy: storage may be down for long, and callers must hear so in seconds.
 */
const COMMIT_WAIT_MS = 10_000;
/** Failed attempts after which a waiting caller is told storage refuses the commit (one may be a hiccup). */
const REFUSED_IN_A_ROW = 2;

export class CommitJobs {
  /** By snapshot id. */
  private readonly jobs = new Map<string, CommitJob>();
  private closed = false;
  /** Commit attempts storage refused since the node started (each job retries until one succeeds). */
  private refused = 0;

  constructor(
    private readonly o: SnapshotManagerOptions,
    private readonly files: SnapshotFiles,
    private readonly paused: PausedSlots,
  ) {}

  get(snapshotId: string): CommitJob | undefined {
    return this.jobs.get(snapshotId);
  }

  has(snapshotId: string): boolean {
    return this.jobs.has(snapshotId);
  }

  /** The pending pause of this sandbox that was not resumed, if any. */
  pendingOf(sandboxId: string): CommitJob | undefined {
    return [...this.jobs.values()].find((j) => j.intent.sandboxId === sandboxId && !j.resumed);
  }

  /** Pauses on this node's disk not yet committed, and the commit attempts refused so far (the node's metrics). */
  stats(): { pending: number; refused: number } {
    return { pending: this.jobs.size, refused: this.refused };
  }

  /** Jobs stop retrying (shutdown); the next start restarts them from their intents. */
  close(): void {
    this.closed = true;
  }

  /** The paused sandbox leaves the node (its slot stays as a cache) and its commit job starts. */
  hold(intent: Intent): void {
    const { sandboxId, slotId } = intent;
    const { snapshotId, memory } = intent.pausing;
    if (memory) this.paused.keep(snapshotId, slotId);
    this.o.manager.release(sandboxId);
    const job: CommitJob = { intent, resumed: false, deleted: false, failures: 0, onFailure: new Set(), committed: Promise.resolve(undefined as never) };
    job.committed = this.run(job);
    job.committed.catch(() => undefined);
    this.jobs.set(snapshotId, job);
  }

  /**
   * The job's manifest once committed; SandboxBusy when that takes longer than COMMIT_WAIT_MS. A job waiting out a
   * retry delay (up to a minute) tries again at once: someone needs the commit now, and storage may be back. Once
   * storage has refused REFUSED_IN_A_ROW attempts, a caller hears so at the next failure rather than after the
   * whole wait: a control plane that asks before resuming on another node then moves on in about one attempt.
   */
  async committed(job: CommitJob): Promise<SnapshotManifest> {
    const { sandboxId, pausing } = job.intent;
    job.wake?.();
    let timer: NodeJS.Timeout | undefined;
    let failed: ((err: unknown) => void) | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SandboxBusy(sandboxId, `paused; its snapshot ${pausing.snapshotId} is not committed to cluster storage yet`)), COMMIT_WAIT_MS).unref();
      failed = (err) => {
        if (job.failures < REFUSED_IN_A_ROW) return;
        reject(new SandboxBusy(sandboxId, `paused; its snapshot ${pausing.snapshotId} is not committed: cluster storage refused it (${(err as Error).message})`));
      };
      job.onFailure.add(failed);
    });
    try {
      return await Promise.race([job.committed, late]);
    } finally {
      clearTimeout(timer);
      job.onFailure.delete(failed!);
    }
  }

  /** The snapshot is being deleted: the job never commits (one in the middle of its upload finishes first). */
  async cancel(job: CommitJob): Promise<void> {
    job.deleted = true;
    job.wake?.();
    await job.committed.catch(() => undefined);
  }

  private async run(job: CommitJob): Promise<SnapshotManifest> {
    const { sandboxId, slotId } = job.intent;
    const { snapshotId, memory } = job.intent.pausing;
    const log = this.o.log.child({ sandboxId, snapshotId });
    // A moment's grace: a sandbox resumed right away (here, in place) no longer needs this snapshot, and its
    // restore then does not compete with hashing and uploading it.
    await new Promise((r) => setTimeout(r, COMMIT_DELAY_MS).unref());
    for (;;) {
      const t0 = Date.now();
      try {
        if (job.deleted || job.resumed) throw new SnapshotNotFound(snapshotId);
        const manifest = await commitSnapshot(this.o, this.files, job.intent, () => job.deleted || job.resumed);
        this.jobs.delete(snapshotId);
        // The intent record goes, unless a resume in place already made it a running sandbox's record again.
        if (!job.resumed && !this.o.manager.get(sandboxId)) {
          await this.o.store.remove(sandboxId).catch((err: unknown) => log.error({ err }, 'removing the paused sandbox\'s record failed'));
        }
        if (!memory) await this.o.runtime.destroy(slotId).catch((err: unknown) => log.error({ err, slotId }, 'destroying a paused slot failed'));
        log.info({ upperBytes: manifest.upper.size, memoryBytes: manifest.memory?.size ?? 0, commitMs: Date.now() - t0 }, 'snapshot committed');
        return manifest;
      } catch (err) {
        if (job.deleted || job.resumed || this.closed) {
          this.jobs.delete(snapshotId);
          if (job.resumed) log.info('the sandbox was resumed in place before its snapshot was committed; not committing it');
          throw err;
        }
        // The attempt that just failed, counted from 0 (the job's failures are its attempts so far).
        const attempt = job.failures++;
        this.refused++;
        for (const tell of job.onFailure) tell(err);
        // A caller waits and storage has not yet refused enough to tell it so: try again now, not after a delay.
        const wait = job.onFailure.size > 0 && job.failures < REFUSED_IN_A_ROW ? 0 : COMMIT_RETRY_MS[Math.min(attempt, COMMIT_RETRY_MS.length - 1)]!;
        log.warn({ err, attempt, retryInMs: wait }, 'committing the snapshot failed; retrying');
        await new Promise<void>((r) => {
          const t = setTimeout(r, wait).unref();
          job.wake = () => {
            clearTimeout(t);
            r();
          };
        });
        job.wake = undefined;
      }
    }
  }
}
