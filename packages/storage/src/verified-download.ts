// Downloading an artifact to a local file with its bytes checked against the sha256 (and size) an authenticated
// document names, before anything unpacks or runs it: the file is renamed into place only once verified.

import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { getArtifact } from './artifacts.js';
import type { BlobStore } from './blob-store.js';
import { HashMismatch, SizeMismatch } from './errors.js';
import { HashingStream } from './hashing-stream.js';
import { FILE_CHUNK_BYTES } from './file-chunks.js';

export interface VerifiedDownloadOptions {
  /** The exact size; more bytes stop the download (SizeMismatch), fewer fail after it. */
  size?: number;
  /** An upper bound when the size is not known (TooLarge). */
  maxSize?: number;
}

/**
 * Streams the artifact `sha256` into `dest` (via `dest.part`, mode 0600), hashing as it goes; `dest` exists only
 * when the bytes match. Throws BlobNotFound, HashMismatch, SizeMismatch or TooLarge otherwise (nothing left behind).
 */
export async function downloadVerified(store: BlobStore, sha256: string, dest: string, options: VerifiedDownloadOptions = {}): Promise<{ size: number }> {
  const part = `${dest}.part`;
  try {
    const body = await getArtifact(store, sha256);
    const hash = new HashingStream(options);
    await pipeline(body, hash, createWriteStream(part, { mode: 0o600, highWaterMark: FILE_CHUNK_BYTES }));
    const got = hash.digest();
    if (got !== sha256) throw new HashMismatch(sha256, got);
    if (options.size !== undefined && hash.size !== options.size) throw new SizeMismatch(options.size, hash.size);
    await rename(part, dest);
    return { size: hash.size };
  } catch (err) {
    await rm(part, { force: true });
    throw err;
  }
}
