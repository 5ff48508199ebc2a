// Content-addressed, immutable artifacts (template layers, snapshots' files, build outputs): the key is the
// sha256 of the bytes, so a key can never name two different contents, identical content is stored once,
// and any reader can verify what it got.

import type { Readable } from 'node:stream';
import type { BlobBody, BlobStore, GetOptions } from './blob-store.js';
import { artifactKey } from './keys.js';

/** The outcome of putArtifact. */
export interface ArtifactPut {
  /** `artifacts/sha256/<hh>/<sha256>` */
  key: string;
  sha256: string;
  size: number;
  /** False when the same content was already stored (the put was a no-op). */
  created: boolean;
}

/** Optional checks on an artifact body; a declared hash that differs fails with HashMismatch. */
export interface ArtifactPutOptions {
  sha256?: string;
  size?: number;
  maxSize?: number;
}

/**
 * Stores `body` under its own sha256. If that content is already present nothing is overwritten. A body
 * that does not match a declared hash or size fails with a typed error and leaves nothing behind. The body
 * is always received and hashed, even when its declared hash is already stored, so a wrong declaration is
 * reported rather than silently answered with someone else's bytes; callers that want to skip sending known
 * content ask hasArtifact first.
 */
export async function putArtifact(
  store: BlobStore,
  body: BlobBody,
  options: ArtifactPutOptions = {},
): Promise<ArtifactPut> {
  const staged = await store.stage(body, options);
  const key = artifactKey(staged.sha256);
  if (await store.exists(key)) {
    await staged.discard();
    return { key, sha256: staged.sha256, size: staged.size, created: false };
  }
  await staged.commit(key);
  return { key, sha256: staged.sha256, size: staged.size, created: true };
}

/** Opens the artifact with this sha256 for reading. Throws BlobNotFound when absent. */
export function getArtifact(store: BlobStore, sha256: string, options?: GetOptions): Promise<Readable> {
  return store.get(artifactKey(sha256), options);
}

/** True when the artifact with this sha256 is stored. */
export function hasArtifact(store: BlobStore, sha256: string): Promise<boolean> {
  return store.exists(artifactKey(sha256));
}
