// The one abstraction every storage consumer speaks. Drivers: local directory (local-store.ts), S3 protocol
// (s3-store.ts), and the node cache (cached-store.ts) that wraps either.
//
// Writes are two-phase: `stage` streams the body somewhere private while hashing and counting it, and fails
// (leaving nothing) on a size or hash mismatch; `commit` then publishes it under a key atomically. `put` is
// stage + commit. The split exists for content addressing: an artifact's key is only known once its bytes
// have been hashed (artifacts.ts).

import type { Readable } from 'node:stream';

/** What is known about a stored object. */
export interface BlobInfo {
  key: string;
  size: number;
  lastModified: Date;
  /** Content sha256 hex when the driver knows it (the S3 driver records it as object metadata). */
  sha256?: string;
}

/** A byte range; `end` is inclusive and clamped to the object's last byte. */
export interface ByteRange {
  start: number;
  end?: number;
}

/** Options for reading an object. */
export interface GetOptions {
  range?: ByteRange;
}

/** Checks applied while a body is staged; any failure removes what was written. */
export interface PutOptions {
  /** Exact expected length in bytes. */
  size?: number;
  /** Expected sha256 (lowercase hex) of the body. */
  sha256?: string;
  /** Upper bound on the length; the body is cut off as soon as it is exceeded. */
  maxSize?: number;
}

/** The result of a successful write. */
export interface PutResult {
  key: string;
  size: number;
  sha256: string;
}

/** A fully received and verified body, not yet visible under any key. */
export interface StagedBlob {
  readonly size: number;
  readonly sha256: string;
  /** Publishes the body under `key` (atomically: readers see the old object or the whole new one). */
  commit(key: string): Promise<PutResult>;
  /** Removes the staged body. Safe to call after commit or twice. */
  discard(): Promise<void>;
}

/** A body to write: a stream, or bytes already in memory. */
export type BlobBody = Readable | AsyncIterable<Uint8Array> | Uint8Array;

/** A store of immutable-by-convention objects addressed by slash-separated keys (see keys.ts). */
export interface BlobStore {
  /** Driver name, for logs. */
  readonly driver: 'local' | 's3' | 'cached';
  /**
   * Opens the object (or a range of it) for reading. Throws BlobNotFound / InvalidRange. The caller must read
   * the stream to the end or destroy it: it holds a file handle, a socket or a cache lease until then.
   */
  get(key: string, options?: GetOptions): Promise<Readable>;
  /** Streams `body` in, verifying size and hash, then publishes it under `key`. */
  put(key: string, body: BlobBody, options?: PutOptions): Promise<PutResult>;
  /** Receives and verifies `body` without publishing it (see StagedBlob). */
  stage(body: BlobBody, options?: PutOptions): Promise<StagedBlob>;
  /** Object metadata, or undefined when absent. */
  head(key: string): Promise<BlobInfo | undefined>;
  /** True when the object exists. */
  exists(key: string): Promise<boolean>;
  /** Removes the object; removing an absent object is not an error. */
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix`, in ascending key order. */
  list(prefix: string): AsyncIterable<BlobInfo>;
  /** Copies `from` to `to` inside the store. Throws BlobNotFound when `from` is absent. */
  copy(from: string, to: string): Promise<void>;
}
