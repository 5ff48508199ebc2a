import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { DigestMismatch, UnsupportedImage } from './errors.js';

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Digest and size of a file, read as a stream. */
export async function fileDigest(path: string): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${h.digest('hex')}`, size };
}

/**
 * Passes bytes through while hashing them; fails the stream (DigestMismatch) when the content does not match
 * `digest`, or as soon as it grows past `size`, so a consumer never sees the end of a bad blob as success.
 */
export class VerifyingStream extends Transform {
  private readonly hash = createHash('sha256');
  private seen = 0;

  constructor(
    private readonly digest: string,
    private readonly size?: number,
  ) {
    super();
    if (!digest.startsWith('sha256:')) throw new UnsupportedImage(`unsupported digest algorithm in ${digest}`);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.size !== undefined && this.seen > this.size) {
      cb(new DigestMismatch(this.digest, `more than the announced ${this.size} bytes`));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const actual = `sha256:${this.hash.digest('hex')}`;
    if (actual !== this.digest) cb(new DigestMismatch(this.digest, actual));
    else if (this.size !== undefined && this.seen !== this.size) cb(new DigestMismatch(this.digest, `${this.seen} bytes instead of ${this.size}`));
    else cb();
  }
}
