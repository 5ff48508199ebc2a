// Turning a paused sandbox's local state into a snapshot in cluster storage: the upper-dir export (once), both
// artifacts stored content-addressed, and the manifest that names them (written by the caller: the commit point).

import { rename } from 'node:fs/promises';
import { SnapshotNotFound } from '../errors.js';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import { storeDirTar, storeFile } from './snapshot-artifacts.js';
import type { SnapshotFiles } from './snapshot-files.js';
import { deleteUnreferenced } from './snapshot-gc.js';
import { writeSnapshotManifest, type SnapshotManifest } from './snapshot-manifest.js';
import { artifactsOf, exists, type Intent, type SnapshotManagerOptions } from './snapshot-types.js';

/** Exports the slot's writable layer to the snapshot's `upper.tar` unless it is there already. */
export async function exportUpper(runtime: SandboxRuntime, files: SnapshotFiles, intent: Intent): Promise<void> {
  const upperFile = files.upperOf(intent.pausing.snapshotId);
  if (await exists(upperFile)) return;
  await runtime.exportUpper(intent.slotId, `${upperFile}.tmp`);
  await rename(`${upperFile}.tmp`, upperFile);
}

/** envd's init secret of a slot, from the runtime's record of it (taken at pause time into the intent). */
export async function initTokenOf(runtime: SandboxRuntime, slotId: string): Promise<string> {
  const rec = await runtime.record(slotId);
  if (!rec) throw new Error(`slot ${slotId} has no record`);
  return rec.initToken;
}

/** Exports the writable layer (once), puts both artifacts into cluster storage and returns the manifest to write. */
export async function uploadSnapshot(o: SnapshotManagerOptions, files: SnapshotFiles, intent: Intent): Promise<SnapshotManifest> {
  const { snapshotId, memory } = intent.pausing;
  const upperFile = files.upperOf(snapshotId);
  await exportUpper(o.runtime, files, intent);
  const [upper, images, builds] = await Promise.all([
    storeFile(o.blobs, upperFile),
    memory ? storeDirTar(o.blobs, files.imagesOf(snapshotId)) : Promise.resolve(null),
    memory ? files.builds.store(files.imagesOf(snapshotId)) : Promise.resolve(undefined),
  ]);
  return {
    version: 1,
    snapshotId,
    sandboxId: intent.sandboxId,
    teamId: intent.teamId,
    templateId: intent.templateId,
    buildId: intent.buildId,
    vcpu: intent.vcpu,
    memoryMb: intent.memoryMb,
    diskMb: intent.diskMb,
    envVars: intent.envVars,
    upper,
    memory: images,
    ...(builds ? { builds } : {}),
    initToken: memory ? (intent.pausing.initToken ?? (await initTokenOf(o.runtime, intent.slotId))) : '',
    envdVersion: intent.envdVersion,
    nodeId: o.nodeId,
    createdAt: new Date().toISOString(),
  };
}

/**
 * Commits the snapshot: its artifacts stored, then its manifest written (the commit point). When `gone()` turns true
 * while the artifacts upload (the snapshot was deleted, or is stale), what was stored is removed again and it
 * throws SnapshotNotFound: no manifest will name those artifacts.
 */
export async function commitSnapshot(o: SnapshotManagerOptions, files: SnapshotFiles, intent: Intent, gone: () => boolean = () => false): Promise<SnapshotManifest> {
  const manifest = await uploadSnapshot(o, files, intent);
  if (gone()) {
    await deleteUnreferenced(o.blobs, files.builds.deletable(artifactsOf(manifest)), o.log.child({ sandboxId: intent.sandboxId, snapshotId: intent.pausing.snapshotId }));
    throw new SnapshotNotFound(intent.pausing.snapshotId);
  }
  await writeSnapshotManifest(o.blobs, manifest);
  // Committed either way: a build missing now fails only restores on nodes without it, which is logged.
  await files.builds.restoreMissing(manifest.builds, files.imagesOf(manifest.snapshotId)).catch((err: unknown) =>
    o.log.error({ err, snapshotId: manifest.snapshotId }, 'a build the snapshot runs could not be stored again'),
  );
  return manifest;
}
