// A snapshot's files on this node, `<dataDir>/snapshots/<snapshotId>/`: `upper.tar` (the upper-dir export) and
// `images/` (the CRIU image dir). Written by a pause, or downloaded (verified) from cluster storage for a start.

import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobStore } from '@cove/storage';
import { fetchTarToDir, fetchToFile } from './snapshot-artifacts.js';
import type { SnapshotBuilds } from './snapshot-builds.js';
import type { SnapshotManifest } from './snapshot-manifest.js';
import { exists } from './snapshot-types.js';

export class SnapshotFiles {
  /** Starts reading a snapshot's local files right now, by snapshot id (the sweep leaves those alone). */
  private readonly inUse = new Map<string, number>();
  /** Artifact downloads in flight, by snapshot id and kind, and how many starts wait for each. */
  private readonly fetches = new Map<string, { done: Promise<void>; waiters: number }>();

  constructor(
    private readonly dataDir: string,
    private readonly blobs: BlobStore,
    /** The node and tini builds memory snapshots run, to and from cluster storage. */
    readonly builds: SnapshotBuilds,
  ) {}

  get root(): string {
    return join(this.dataDir, 'snapshots');
  }

  dirOf(snapshotId: string): string {
    return join(this.root, snapshotId);
  }

  imagesOf(snapshotId: string): string {
    return join(this.dirOf(snapshotId), 'images');
  }

  upperOf(snapshotId: string): string {
    return join(this.dirOf(snapshotId), 'upper.tar');
  }

  /** Runs `start` with the snapshot's local files protected from the sweep. */
  async using<T>(snapshotId: string, start: () => Promise<T>): Promise<T> {
    this.inUse.set(snapshotId, (this.inUse.get(snapshotId) ?? 0) + 1);
    try {
      return await start();
    } finally {
      const n = (this.inUse.get(snapshotId) ?? 1) - 1;
      if (n > 0) this.inUse.set(snapshotId, n);
      else this.inUse.delete(snapshotId);
    }
  }

  isInUse(snapshotId: string): boolean {
    return this.inUse.has(snapshotId);
  }

  async remove(snapshotId: string): Promise<void> {
    await rm(this.dirOf(snapshotId), { recursive: true, force: true });
  }

  /**
   * Makes the snapshot's artifacts present in its local dir (one download per snapshot at a time). A download that
   * fails (a full disk, storage gone) leaves nothing behind: the dir is only a copy of storage's (a committed
   * snapshot), so it goes unless a start other than this download's own waiters reads it.
   */
  fetch(m: SnapshotManifest, cold: boolean): Promise<void> {
    const key = `${m.snapshotId}/${cold ? 'fs' : 'mem'}`;
    let flight = this.fetches.get(key);
    if (!flight) {
      const f = { done: Promise.resolve(), waiters: 0 };
      f.done = this.download(m, cold)
        .catch(async (err: unknown) => {
          if ((this.inUse.get(m.snapshotId) ?? 0) <= f.waiters) await this.remove(m.snapshotId).catch(() => undefined);
          throw err;
        })
        .finally(() => this.fetches.delete(key));
      this.fetches.set(key, f);
      flight = f;
    }
    flight.waiters++;
    return flight.done;
  }

  private async download(m: SnapshotManifest, cold: boolean): Promise<void> {
    const dir = this.dirOf(m.snapshotId);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const upper = this.upperOf(m.snapshotId);
    if (!(await exists(upper))) {
      await fetchToFile(this.blobs, m.upper, upper, m.snapshotId);
    }
    if (cold || !m.memory) return;
    // The builds every time: a local copy of the images outlives a build this node pruned since.
    await Promise.all([this.builds.fetch(m), this.fetchImages(m, m.memory)]);
  }

  private async fetchImages(m: SnapshotManifest, memory: NonNullable<SnapshotManifest['memory']>): Promise<void> {
    const images = this.imagesOf(m.snapshotId);
    if (await exists(join(images, 'cove-checkpoint.json'))) return;
    const part = `${images}.part`;
    await rm(part, { recursive: true, force: true });
    try {
      await fetchTarToDir(this.blobs, memory, part, join(this.dirOf(m.snapshotId), 'images.tar.part'), m.snapshotId);
    } catch (err) {
      await rm(part, { recursive: true, force: true });
      throw err;
    }
    await rm(images, { recursive: true, force: true });
    await rename(part, images);
  }
}
