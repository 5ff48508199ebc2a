// Deleting a snapshot's artifacts safely: artifacts are content-addressed and shared (an unchanged upper dir
// tars to the same bytes in two snapshots, and could equal a template layer), so one is deleted only when no
// other snapshot manifest and no template metadata (build manifests, layer-cache entries) names its digest.
// The scan reads every such JSON document: fine for clusters with thousands of them; a reference index is
// the next step beyond that.

import type { BlobStore } from '@cove/storage';
import { artifactKey } from '@cove/storage';
import type { Logger } from 'pino';

const METADATA_PREFIXES = ['snapshots/', 'templates/'];

async function text(store: BlobStore, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of (await store.get(key)) as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

/** Deletes each artifact no remaining metadata document mentions. Call after the snapshot's manifest is gone. */
export async function deleteUnreferenced(store: BlobStore, digests: string[], log: Logger): Promise<void> {
  const left = new Set(digests);
  for (const prefix of METADATA_PREFIXES) {
    for await (const blob of store.list(prefix)) {
      if (left.size === 0) return;
      if (!blob.key.endsWith('.json')) continue;
      const body = await text(store, blob.key).catch(() => '');
      for (const d of left) if (body.includes(d)) left.delete(d);
    }
  }
  for (const d of left) {
    await store.delete(artifactKey(d));
    log.debug({ digest: d }, 'deleted an unreferenced snapshot artifact');
  }
}
