// A pass-through that hashes and counts bytes on their way to disk, and stops the pipeline the moment the
// body outgrows its limit, so an oversized upload never lands in full on the node's disk.

import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { HashMismatch, SizeMismatch, TooLarge } from './errors.js';
import type { PutOptions } from './blob-store.js';

/**
 * Hashes (sha256) and counts what flows through; fails with TooLarge past `maxSize` bytes and with
 * SizeMismatch past a declared `size`, without passing the offending chunk on.
 */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private count = 0;

  constructor(private readonly options: PutOptions = {}) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.count += chunk.length;
    const { maxSize, size } = this.options;
    if (maxSize !== undefined && this.count > maxSize) {
      callback(new TooLarge(maxSize));
      return;
    }
    if (size !== undefined && this.count > size) {
      callback(new SizeMismatch(size, this.count));
      return;
    }
    this.hash.update(chunk);
    callback(null, chunk);
  }

  /** Bytes seen so far. */
  get size(): number {
    return this.count;
  }

  /** The sha256 hex of everything seen; call once, after the stream finished. */
  digest(): string {
    return this.hash.digest('hex');
  }
}

/** Throws SizeMismatch / HashMismatch when the received body differs from what was declared. */
export function verifyReceived(options: PutOptions, size: number, sha256: string): void {
  if (options.size !== undefined && options.size !== size) throw new SizeMismatch(options.size, size);
  if (options.sha256 !== undefined && options.sha256.toLowerCase() !== sha256) {
    throw new HashMismatch(options.sha256.toLowerCase(), sha256);
  }
}

/** Rejects, before any byte is read, a declared size beyond maxSize or a malformed declared hash. */
export function checkDeclared(options: PutOptions): void {
  if (options.size !== undefined && options.maxSize !== undefined && options.size > options.maxSize) {
    throw new TooLarge(options.maxSize);
  }
  if (options.sha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(options.sha256)) {
    throw new HashMismatch(options.sha256, 'a malformed declared hash');
  }
}
