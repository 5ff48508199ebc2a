// Pause and persistent snapshots of a running sandbox (docs/pause-resume.md, "Orchestrator").
//
// Crash safety: before a pause touches the slot, the sandbox's record gets its intent (`pausing`, with envd's
// init token). Before the processes are gone a failure puts the sandbox back, running. From the dump on, a pause
// only goes forward: the images and the slot's disk stay until the commit, and the next start of the node
// restarts the commit job of every intent it finds (snapshot-recovery.ts). So at every moment the sandbox is
// running, or its complete state is on this node's disk or in cluster storage.

import { mkdir, rm, stat } from 'node:fs/promises';
import { CheckpointFailed, InvalidArgument, SandboxBusy, SnapshotNotFound } from '../errors.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import { validateSandboxId } from '../sandboxes/validate-spec.js';
import type { CommitJobs } from './commit-jobs.js';
import type { DeferredCommits } from './deferred-commits.js';
import type { SnapshotFiles } from './snapshot-files.js';
import { readSnapshotManifest, SNAPSHOT_ID_RE } from './snapshot-manifest.js';
import { summaryOf, type Intent, type PauseResult, type SnapshotCommit, type SnapshotManagerOptions, type SnapshotSummary } from './snapshot-types.js';
import { commitSnapshot, exportUpper, initTokenOf } from './snapshot-upload.js';

export class Pauser {
  /** Snapshot ids a pause or snapshot is working on right now (the sweep leaves their files alone). */
  private readonly active = new Set<string>();

  constructor(
    private readonly o: SnapshotManagerOptions,
    private readonly files: SnapshotFiles,
    private readonly jobs: CommitJobs,
    private readonly deferred: DeferredCommits,
  ) {}

  isActive(snapshotId: string): boolean {
    return this.active.has(snapshotId);
  }

  private checkIds(sandboxId: string, snapshotId: string): void {
    const v = validateSandboxId(sandboxId);
    if (!SNAPSHOT_ID_RE.test(snapshotId)) v.push(`snapshot_id: must match ${SNAPSHOT_ID_RE.source}`);
    if (v.length) throw new InvalidArgument(v);
  }

  async pause(sandboxId: string, snapshotId: string, memory: boolean): Promise<PauseResult> {
    this.checkIds(sandboxId, snapshotId);
    const job = this.jobs.get(snapshotId);
    if (job) {
      // Idempotent, and the way to wait for the commit (before a resume on another node).
      if (job.intent.sandboxId !== sandboxId) throw new InvalidArgument([`snapshot_id: ${snapshotId} is another sandbox's`]);
      return { summary: summaryOf(await this.jobs.committed(job)), pauseMs: 0 };
    }
    let other = this.jobs.pendingOf(sandboxId);
    if (other && this.o.manager.get(sandboxId)) {
      // It runs here again: resumed into a new slot from this node's files of a pause whose commit has not settled
      // (the control plane deletes that snapshot right after the resume). The new pause waits for that commit to
      // settle, committed or deleted, so the two pauses' records never race; a commit stuck on storage still
      // answers SandboxBusy within the commit wait.
      await this.jobs.committed(other).catch(() => undefined);
      other = this.jobs.pendingOf(sandboxId);
    }
    if (other) throw new SandboxBusy(sandboxId, `paused as snapshot ${other.intent.pausing.snapshotId}`);
    if (!this.o.manager.get(sandboxId) && !this.o.manager.isBusy(sandboxId)) {
      // The pause already happened and was committed (its answer may have been lost).
      const done = await readSnapshotManifest(this.o.blobs, snapshotId).catch(() => undefined);
      if (done && done.sandboxId === sandboxId) return { summary: summaryOf(done), pauseMs: 0 };
    }
    const record = this.o.manager.detach(sandboxId, 'being paused');
    const started = Date.now();
    const intent: Intent = { ...record, pausing: { snapshotId, memory, keepRunning: false } };
    this.active.add(snapshotId);
    try {
      let imageBytes: number;
      try {
        imageBytes = await this.stop(intent);
        // Exported now, while nothing runs in the slot: a resume in place may start writing again at once.
        await exportUpper(this.o.runtime, this.files, intent);
      } catch (err) {
        if (err instanceof CheckpointFailed) throw err;
        // The processes are gone: whatever is left is committed (the control plane's retry waits for it).
        this.jobs.hold(intent);
        throw err;
      }
      const pauseMs = Date.now() - started;
      const summary = await this.localSummary(intent, imageBytes);
      this.jobs.hold(intent);
      this.o.log.info({ sandboxId, snapshotId, memory, pauseMs, sizeBytes: summary.sizeBytes }, 'sandbox paused; committing its snapshot');
      return { summary, pauseMs };
    } finally {
      this.active.delete(snapshotId);
    }
  }

  /**
   * Records the intent, then stops the sandbox's processes (a CRIU dump, or SIGKILL without memory); returns the
   * dump's bytes (0 without memory). A failure before the processes are gone puts the sandbox back, running, and
   * throws CheckpointFailed.
   */
  private async stop(intent: Intent): Promise<number> {
    const { sandboxId, slotId } = intent;
    const { snapshotId, memory } = intent.pausing;
    const dir = this.files.dirOf(snapshotId);
    try {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true, mode: 0o711 });
      // Everything the commit needs is taken now, while the slot surely exists (docs/pause-resume.md, "Invariant").
      if (memory) intent.pausing.initToken ??= await initTokenOf(this.o.runtime, slotId);
      await this.o.store.save(intent);
      if (memory) return (await this.o.runtime.checkpoint(slotId, this.files.imagesOf(snapshotId))).imageBytes;
      await this.o.runtime.halt(slotId);
      return 0;
    } catch (err) {
      if (await this.o.runtime.isAlive(slotId).catch(() => false)) {
        const { pausing: _, ...running } = intent;
        await this.o.store.save(running).catch((e: unknown) => this.o.log.error({ err: e, sandboxId }, 'clearing the pause intent failed'));
        this.o.manager.reattach(running);
        // The sandbox runs on: its partial dump is of no use, and a full disk (the usual cause) needs the room back.
        await rm(dir, { recursive: true, force: true }).catch((e: unknown) => this.o.log.error({ err: e, sandboxId, snapshotId }, 'removing a failed dump failed'));
        throw new CheckpointFailed(sandboxId, { cause: err });
      }
      // The processes are gone without a complete dump: only the filesystem can still be kept.
      this.o.log.error({ err, sandboxId, snapshotId }, 'the dump failed and the processes are gone; pausing the filesystem only');
      intent.pausing.memory = false;
      await this.o.store.save(intent).catch(() => undefined);
      throw err;
    }
  }

  /**
   * A persistent snapshot: pause, then the sandbox runs on in place (restored right after the dump). Committed to
   * cluster storage before the answer (`now`), or only when asked (`deferred`: a fork's, deferred-commits.ts);
   * `pending` commits a deferred one and takes no checkpoint.
   */
  async snapshot(sandboxId: string, snapshotId: string, commit: SnapshotCommit): Promise<PauseResult & { record: SandboxRecord }> {
    this.checkIds(sandboxId, snapshotId);
    if (commit === 'pending') {
      const held = this.deferred.get(snapshotId);
      if (!held || held.intent.sandboxId !== sandboxId) throw new SnapshotNotFound(snapshotId);
      return { summary: summaryOf(await held.commit.run()), pauseMs: 0, record: held.record };
    }
    const record = this.o.manager.detach(sandboxId, 'being snapshotted');
    const started = Date.now();
    const intent = { ...record, pausing: { snapshotId, memory: true, keepRunning: true } };
    this.active.add(snapshotId);
    try {
      const imageBytes = await this.stop(intent);
      let running: SandboxRecord;
      try {
        await exportUpper(this.o.runtime, this.files, intent);
      } finally {
        running = await this.restoreInPlace(intent);
      }
      const pauseMs = Date.now() - started;
      // What the snapshot's manifest says of the sandbox: the record it runs on with, the snapshot's own fields.
      const taken: Intent = { ...running, pausing: intent.pausing };
      if (commit === 'deferred') {
        const summary = await this.localSummary(intent, imageBytes);
        this.deferred.hold(taken, running);
        this.o.log.info({ sandboxId, snapshotId, pauseMs }, 'snapshot taken; its commit deferred');
        return { summary, pauseMs, record: running };
      }
      // A persistent snapshot must be usable from any node as soon as it is answered: committed first.
      const manifest = await commitSnapshot(this.o, this.files, taken);
      this.o.log.info({ sandboxId, snapshotId, pauseMs }, 'snapshot taken');
      return { summary: summaryOf(manifest), pauseMs, record: running };
    } finally {
      this.active.delete(snapshotId);
    }
  }

  /** What a Pause or Snapshot answers of a snapshot on this node's disk, not committed yet. */
  private async localSummary(intent: Intent, imageBytes: number): Promise<SnapshotSummary> {
    const { sandboxId, pausing: { snapshotId, memory } } = intent;
    const upperBytes = (await stat(this.files.upperOf(snapshotId))).size;
    return { snapshotId, sandboxId, memory, sizeBytes: upperBytes + imageBytes, createdAt: new Date().toISOString() };
  }

  /** Restores a dumped sandbox into its own slot and puts it back on the routing table. */
  async restoreInPlace(intent: Intent): Promise<SandboxRecord> {
    const { pid } = await this.o.runtime.restore(intent.slotId, this.files.imagesOf(intent.pausing.snapshotId));
    const { pausing: _, ...running } = { ...intent, pid };
    await this.o.store.save(running);
    this.o.manager.reattach(running);
    return running;
  }
}
