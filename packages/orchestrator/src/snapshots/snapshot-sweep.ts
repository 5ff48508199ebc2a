// The periodic sweep of this node's snapshot files: local copies of snapshots whose manifest is gone (deleted
// through another node) are dropped, and committed copies beyond COVE_LOCAL_SNAPSHOTS go oldest first (storage
// has them). Anything a pause, commit, start or paused slot uses is left alone.

import { readdir, stat } from 'node:fs/promises';
import type { SnapshotFiles } from './snapshot-files.js';
import { SNAPSHOT_ID_RE, snapshotManifestKey } from './snapshot-manifest.js';
import type { SnapshotManagerOptions } from './snapshot-types.js';

export interface SweepParts {
  o: SnapshotManagerOptions;
  files: SnapshotFiles;
  /** Something works on the snapshot's files right now. */
  busy: (snapshotId: string) => boolean;
  /** Removes the snapshot's local files and kept slot. */
  drop: (snapshotId: string) => Promise<void>;
}

export class SnapshotSweeper {
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;

  constructor(private readonly p: SweepParts) {}

  start(intervalMs: number): void {
    this.timer ??= setInterval(() => {
      this.sweeping ??= this.sweep()
        .catch((err: unknown) => this.p.o.log.warn({ err }, 'snapshot sweep failed'))
        .finally(() => (this.sweeping = undefined));
    }, intervalMs).unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.sweeping;
  }

  async sweep(): Promise<void> {
    const { o, files } = this.p;
    const ids = await readdir(files.root).catch(() => [] as string[]);
    const busy = (id: string): boolean => !SNAPSHOT_ID_RE.test(id) || this.p.busy(id);
    const kept: Array<{ id: string; mtimeMs: number }> = [];
    for (const id of ids) {
      if (busy(id)) continue;
      if (await o.blobs.exists(snapshotManifestKey(id)).catch(() => true)) {
        kept.push({ id, mtimeMs: (await stat(files.dirOf(id)).catch(() => null))?.mtimeMs ?? 0 });
        continue;
      }
      await this.p.drop(id);
      o.log.info({ snapshotId: id }, 'dropped the local copy of a deleted snapshot');
    }
    kept.sort((a, b) => b.mtimeMs - a.mtimeMs);
    for (const { id } of kept.slice(o.maxLocalSnapshots)) {
      if (busy(id)) continue;
      await files.remove(id);
      o.log.info({ snapshotId: id }, 'dropped the local copy of a snapshot (cache bound)');
    }
  }
}
