import { Readable } from 'node:stream';
import type { BlobBody } from './blob-store.js';

/** Any accepted body as a Readable, so every write path is one stream pipeline. */
export function toReadable(body: BlobBody): Readable {
  if (body instanceof Readable) return body;
  if (body instanceof Uint8Array) return Readable.from([Buffer.from(body.buffer, body.byteOffset, body.byteLength)]);
  return Readable.from(body);
}
