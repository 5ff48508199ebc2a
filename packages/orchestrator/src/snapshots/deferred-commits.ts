// Deferred commits: a snapshot taken with SNAPSHOT_COMMIT_DEFERRED (a fork's) answers once its files are on this
// node's disk and the sandbox runs again; it reaches cluster storage only when asked (SNAPSHOT_COMMIT_PENDING, before
// a copy starts on another node). Copies on this node start from the files at once, and a fork whose copies all
// start here never uploads at all. Kept in memory only: after a restart the sweep drops the files, and a start from
// the snapshot is NOT_FOUND. Nothing else is lost: the source ran on, and each copy started runs from its own slot.

import { SnapshotNotFound } from '../errors.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import type { SnapshotFiles } from './snapshot-files.js';
import { deleteUnreferenced } from './snapshot-gc.js';
import { writeSnapshotManifest, type SnapshotManifest } from './snapshot-manifest.js';
import { artifactsOf, type Intent, type SnapshotManagerOptions, type SnapshotSource, type SnapshotSummary } from './snapshot-types.js';
import { uploadSnapshot } from './snapshot-upload.js';

export interface DeferredSnapshot {
  /** The source's record as the snapshot took it, with its intent (what the commit writes into the manifest). */
  intent: Intent;
  /** The running source's record right after the snapshot (what the Snapshot answer carries). */
  record: SandboxRecord;
  summary: SnapshotSummary;
  /** The commit in flight or done; undefined until asked for, and again after a failed try. */
  commit?: Promise<SnapshotManifest>;
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

  hold(d: DeferredSnapshot): void {
    this.held.set(d.intent.pausing.snapshotId, d);
  }

  /** What a start from the snapshot's local files needs. */
  sourceOf(d: DeferredSnapshot): SnapshotSource {
    const { intent } = d;
    return { snapshotId: intent.pausing.snapshotId, templateId: intent.templateId, buildId: intent.buildId, diskMb: intent.diskMb, initToken: intent.pausing.initToken ?? '' };
  }

  /** Commits the snapshot (once; a failed try is tried again by the next caller) and answers its manifest. */
  commit(d: DeferredSnapshot): Promise<SnapshotManifest> {
    const { sandboxId, pausing: { snapshotId } } = d.intent;
    if (!d.commit) {
      const t0 = Date.now();
      d.commit = (async () => {
        const manifest = await uploadSnapshot(this.o, this.files, d.intent);
        if (!this.held.has(snapshotId)) {
          // Deleted while it uploaded: no manifest will name what was stored.
          await deleteUnreferenced(this.o.blobs, artifactsOf(manifest), this.o.log);
          throw new SnapshotNotFound(snapshotId);
        }
        await writeSnapshotManifest(this.o.blobs, manifest);
        this.o.log.info({ sandboxId, snapshotId, commitMs: Date.now() - t0 }, 'deferred snapshot committed');
        return manifest;
      })();
      d.commit.catch(() => {
        d.commit = undefined;
      });
    }
    return d.commit;
  }

  /** Forgets the snapshot (it is being deleted), once a commit in flight has settled. */
  async drop(snapshotId: string): Promise<void> {
    const d = this.held.get(snapshotId);
    if (!d) return;
    this.held.delete(snapshotId);
    await d.commit?.catch(() => undefined);
  }
}
