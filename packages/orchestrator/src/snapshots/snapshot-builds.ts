// The node and tini builds a memory snapshot runs, carried through cluster storage: CRIU maps a restored executable
// only from a file of the same build, so a node that never ran the dumping node's build (installed after a Node.js
// upgrade, or with another release) could not restore the snapshot. The committing node stores each build once per
// cluster (content-addressed, shared by every snapshot that ran it); a restoring node that lacks one downloads it,
// verified against the signed manifest's sha256, before the restore maps it.

import { createReadStream } from 'node:fs';
import { BlobNotFound, downloadVerified, FILE_CHUNK_BYTES, hasArtifact, HashMismatch, putArtifact, SizeMismatch, type BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import { SnapshotRestoreFailed } from '../errors.js';
import type { BuildKind } from '../sandbox/lent-files.js';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { SnapshotManifest } from './snapshot-manifest.js';

export type ManifestBuilds = NonNullable<SnapshotManifest['builds']>;

const KINDS: readonly BuildKind[] = ['node', 'init'];

export class SnapshotBuilds {
  /** Uploads and downloads in flight, by sha256: a burst of pauses or resumes moves each build once. */
  private readonly flights = new Map<string, Promise<void>>();
  /** The builds this node's snapshots were committed with since it started: its next pause needs them again. */
  private readonly committing = new Set<string>();

  constructor(
    private readonly blobs: BlobStore,
    private readonly runtime: SandboxRuntime,
    private readonly log: Logger,
  ) {}

  /**
   * The builds the checkpoint in `imageDir` runs, each in cluster storage once this resolves (uploaded when missing):
   * what the snapshot's manifest names. Undefined when this node does not keep one of them (images of an older
   * version): the snapshot then restores only where that build is.
   */
  async store(imageDir: string): Promise<ManifestBuilds | undefined> {
    const files = await this.runtime.checkpointBuildFiles(imageDir);
    if (!files.node || !files.init) {
      this.log.warn({ imageDir }, 'a memory snapshot without its node/tini builds: only nodes that keep them can restore it');
      return undefined;
    }
    const { node, init } = files;
    for (const b of [node, init]) this.committing.add(b.sha256);
    try {
      await Promise.all([node, init].map((b) => this.once(b.sha256, () => this.upload(b.file, b.sha256))));
    } catch (err) {
      // A kept copy whose bytes are no longer its build's must not hold the commit back for ever (storage being
      // down is retried instead): the snapshot commits without builds, restorable where the build is kept.
      if (!(err instanceof HashMismatch)) throw err;
      this.log.error({ err, imageDir }, 'a kept node/tini build does not match its digest: the snapshot commits without its builds');
      return undefined;
    }
    return { node: { sha256: node.sha256, size: node.size }, init: { sha256: init.sha256, size: init.size } };
  }

  /**
   * Stores again a build a concurrent deletion removed between `store` and the manifest's write (a build is
   * deleted once no manifest names it; this one does now, so no later deletion takes it).
   */
  async restoreMissing(builds: ManifestBuilds | undefined, imageDir: string): Promise<void> {
    if (!builds) return;
    for (const kind of KINDS) {
      if (await hasArtifact(this.blobs, builds[kind].sha256)) continue;
      const kept = await this.runtime.keptBuild(kind, builds[kind].sha256);
      if (!kept) throw new Error(`the ${kind} build ${builds[kind].sha256} left cluster storage and this node (${imageDir})`);
      this.log.warn({ kind, sha256: kept.sha256 }, 'a build left cluster storage while its snapshot committed; storing it again');
      await this.once(kept.sha256, () => this.upload(kept.file, kept.sha256));
    }
  }

  /**
   * Of the digests of a deleted snapshot, those a deletion may remove once no manifest names them: not the builds
   * this node commits snapshots with (~100 MB of node each), which its next pause would store again.
   */
  deletable(digests: readonly string[]): string[] {
    return digests.filter((d) => !this.committing.has(d));
  }

  /** Makes the manifest's builds present on this node (verified downloads of those it lacks) for its restore. */
  async fetch(m: SnapshotManifest): Promise<void> {
    const builds = m.builds;
    if (!builds) return;
    await Promise.all(
      KINDS.map(async (kind) => {
        const { sha256, size } = builds[kind];
        if (await this.runtime.keptBuild(kind, sha256)) return;
        await this.once(sha256, async () => {
          if (await this.runtime.keptBuild(kind, sha256)) return;
          const t = Date.now();
          await this.runtime.adoptBuild(kind, sha256, (dest) => download(this.blobs, sha256, size, dest, m.snapshotId));
          this.log.info({ kind, sha256, size, ms: Date.now() - t, snapshotId: m.snapshotId }, 'fetched a build a snapshot runs');
        });
      }),
    );
  }

  private async upload(file: string, sha256: string): Promise<void> {
    if (await hasArtifact(this.blobs, sha256)) return;
    const t = Date.now();
    // Declared: bytes that no longer match (the kept copy changed on disk) fail and store nothing.
    await putArtifact(this.blobs, createReadStream(file, { highWaterMark: FILE_CHUNK_BYTES }), { sha256 });
    this.log.info({ sha256, ms: Date.now() - t }, 'stored a build memory snapshots run');
  }

  private once(sha256: string, work: () => Promise<void>): Promise<void> {
    let flight = this.flights.get(sha256);
    if (!flight) {
      flight = work().finally(() => this.flights.delete(sha256));
      this.flights.set(sha256, flight);
    }
    return flight;
  }
}

/**
 * A build missing from storage, or whose stored bytes do not match the manifest, fails this node's restore only: a node
 * that keeps the build restores the snapshot without it (the control plane tries the next node).
 */
async function download(blobs: BlobStore, sha256: string, size: number, dest: string, snapshotId: string): Promise<void> {
  try {
    await downloadVerified(blobs, sha256, dest, { size });
  } catch (err) {
    if (err instanceof BlobNotFound) throw new SnapshotRestoreFailed(snapshotId, `build ${sha256} is missing from cluster storage`, { cause: err });
    if (err instanceof SizeMismatch || err instanceof HashMismatch) {
      throw new SnapshotRestoreFailed(snapshotId, `build ${sha256} in cluster storage does not match the manifest (${err.message})`, { cause: err });
    }
    throw err;
  }
}
