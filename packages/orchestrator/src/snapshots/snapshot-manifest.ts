// A snapshot's manifest, `snapshots/<snapshotId>/manifest.json` (docs/pause-resume.md): written last, once
// both artifacts are stored, so a snapshot exists exactly when its manifest does. It holds everything a node
// needs to run the sandbox again: the template build it ran on, its resources, the env vars envd was given,
// the filesystem diff and (with memory) the CRIU image, both by sha256. It is signed with the cluster's artifact
// key (@cove/storage signDocument): a node restores, as root, only what a node of this cluster wrote.

import type { BlobStore } from '@cove/storage';
import { artifactKeyOf, BlobNotFound, DocumentUntrusted, isSha256Hex, signDocument, verifyDocument } from '@cove/storage';
import { z } from 'zod';
import { SnapshotCorrupt, SnapshotNotFound } from '../errors.js';
import { BUILD_ID_RE, TEMPLATE_ID_RE } from '../templates/manifest.js';

/** Chosen by the control plane; a storage key segment. */
export const SNAPSHOT_ID_RE = /^[a-z0-9][a-z0-9-]{0,63}$/;

const artifact = z.object({
  sha256: z.string().refine(isSha256Hex, 'must be lowercase hex sha256'),
  size: z.number().int().nonnegative(),
});

export const snapshotManifestSchema = z.object({
  version: z.literal(1),
  snapshotId: z.string().regex(SNAPSHOT_ID_RE),
  sandboxId: z.string().min(1).max(128),
  teamId: z.string().max(128),
  templateId: z.string().regex(TEMPLATE_ID_RE),
  /** Empty for a built-in template. */
  buildId: z.union([z.literal(''), z.string().regex(BUILD_ID_RE)]),
  vcpu: z.number().int().positive(),
  memoryMb: z.number().int().positive(),
  diskMb: z.number().int().positive(),
  envVars: z.record(z.string()),
  /** The overlay upper dir as a layer tar. */
  upper: artifact,
  /** The CRIU image dir as a tar; null for a filesystem-only snapshot. */
  memory: artifact.nullable(),
  /**
   * The node and tini builds the memory image runs (CRIU maps a restored executable only from the same bytes), stored
   * as artifacts so that a node that never ran them can restore it; absent without memory and in older manifests.
   */
  builds: z.object({ node: artifact, init: artifact }).optional(),
  /** The dumped envd's init secret (in the restored process's environment); '' without memory. */
  initToken: z.string(),
  envdVersion: z.string(),
  nodeId: z.string(),
  createdAt: z.string(),
});

export type SnapshotManifest = z.output<typeof snapshotManifestSchema>;

export const snapshotManifestKey = (snapshotId: string): string => `snapshots/${snapshotId}/manifest.json`;

/** What the manifest's mac is over (a build manifest's is another). */
const PURPOSE = 'snapshot-manifest';
/** Manifests are small; a bigger document is not read into memory. */
const MAX_MANIFEST_BYTES = 1024 * 1024;

/**
 * The manifest, SnapshotNotFound when absent, SnapshotCorrupt when unreadable, unsigned, forged or altered (not
 * signed with this cluster's artifact key bound to `store`).
 */
export async function readSnapshotManifest(store: BlobStore, snapshotId: string): Promise<SnapshotManifest> {
  if (!SNAPSHOT_ID_RE.test(snapshotId)) throw new SnapshotNotFound(snapshotId.slice(0, 64));
  const key = artifactKeyOf(store);
  let text: string;
  try {
    const body = await store.get(snapshotManifestKey(snapshotId));
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of body as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MAX_MANIFEST_BYTES) {
        body.destroy();
        throw new SnapshotCorrupt(snapshotId, 'the manifest is larger than 1 MiB');
      }
      chunks.push(c);
    }
    text = Buffer.concat(chunks).toString('utf8');
  } catch (err) {
    if (err instanceof BlobNotFound) throw new SnapshotNotFound(snapshotId);
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new SnapshotCorrupt(snapshotId, 'the manifest is not JSON', { cause: err });
  }
  let doc: unknown;
  try {
    doc = verifyDocument(key, PURPOSE, parsed, 'the manifest');
  } catch (err) {
    if (err instanceof DocumentUntrusted) throw new SnapshotCorrupt(snapshotId, err.message, { cause: err });
    throw err;
  }
  const m = snapshotManifestSchema.safeParse(doc);
  if (!m.success) throw new SnapshotCorrupt(snapshotId, `bad manifest: ${m.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  if (m.data.snapshotId !== snapshotId) throw new SnapshotCorrupt(snapshotId, 'the manifest names another snapshot');
  return m.data;
}

/** Commits the snapshot (the manifest goes last: its presence is what makes the snapshot exist), signed. */
export async function writeSnapshotManifest(store: BlobStore, m: SnapshotManifest): Promise<void> {
  await store.put(snapshotManifestKey(m.snapshotId), Buffer.from(signDocument(artifactKeyOf(store), PURPOSE, snapshotManifestSchema.parse(m))));
}
