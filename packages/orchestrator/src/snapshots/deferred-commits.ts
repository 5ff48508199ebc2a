// Deferred commits: a snapshot taken with SNAPSHOT_COMMIT_DEFERRED (a fork's) answers once its files are on this
// node's disk and the sandbox runs again; it reaches cluster storage only when asked (SNAPSHOT_COMMIT_PENDING, before
// a copy starts on another node). Copies on this node start from the files at once, and a fork whose copies all
// start here never uploads at all. Kept in memory only: after a restart the sweep drops the files, and a start from
// the snapshot is NOT_FOUND. Nothing else is lost: the source ran on, and each copy started runs from its own slot.

import { OnceUntilFailure } from '../once-until-failure.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import type { SnapshotFiles } from './snapshot-files.js';
import type { SnapshotManifest } from './snapshot-manifest.js';
import type { Intent, SnapshotManagerOptions } from './snapshot-types.js';
import { commitSnapshot } from './snapshot-upload.js';

export interface DeferredSnapshot {
  /** The source's record as the snapshot took it, with its intent (what the commit writes into the manifest). */
  intent: Intent;
  /** The running source's record right after the snapshot (what the Snapshot answer carries). */
  record: SandboxRecord;
  /** Its commit: made once when asked for (again after a failed try); the manifest once committed. */
  commit: OnceUntilFailure<SnapshotManifest>;
}

export class DeferredCommits {
  private readonly held = new Map<string, DeferredSnapshot>();

  constructor(
    private readonly o: SnapshotManagerOptions,
    private readonly files: SnapshotFiles,
  ) {}

  has(snapshotId: string): boolean {
    return this.held.has(snapshotId);
  }

  get(snapshotId: string): DeferredSnapshot | undefined {
    return this.held.get(snapshotId);
  }

  hold(intent: Intent, record: SandboxRecord): void {
    this.held.set(intent.pausing.snapshotId, { intent, record, commit: new OnceUntilFailure(() => this.upload(intent)) });
  }

  private async upload(intent: Intent): Promise<SnapshotManifest> {
    const { sandboxId, pausing: { snapshotId } } = intent;
    const t0 = Date.now();
    // Dropped while it uploaded: deleted, so no manifest may name what was stored.
    const manifest = await commitSnapshot(this.o, this.files, intent, () => !this.held.has(snapshotId));
    this.o.log.info({ sandboxId, snapshotId, commitMs: Date.now() - t0 }, 'deferred snapshot committed');
    return manifest;
  }

  /** Forgets the snapshot (it is being deleted), once a commit in flight has settled. */
  async drop(snapshotId: string): Promise<void> {
    const d = this.held.get(snapshotId);
    if (!d) return;
    this.held.delete(snapshotId);
    await d.commit.current?.catch(() => undefined);
  }
}
