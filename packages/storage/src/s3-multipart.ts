// Multipart uploads and server-side copies for the S3 driver. One PutObject or CopyObject is limited to
// 5 GiB, and template rootfs and memory snapshots are larger. Parts go one at a time: the node's uplink, not
// request latency, bounds an artifact upload, and sequential parts keep the memory and socket use flat.
// A failed transfer is aborted, so the bucket is not left holding (and billing) orphaned parts.

import { createReadStream } from 'node:fs';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Logger } from 'pino';

/** The object a multipart transfer writes, and how it is cut into parts. */
export interface MultipartTarget {
  client: S3Client;
  bucket: string;
  /** Full object key (driver prefix included). */
  key: string;
  size: number;
  partSize: number;
  /** Recorded as the object's `sha256` metadata. */
  sha256?: string;
  logger: Logger;
}

type PartWriter = (uploadId: string, partNumber: number, first: number, last: number) => Promise<string | undefined>;

async function inParts(target: MultipartTarget, writePart: PartWriter): Promise<void> {
  const { client, bucket, key } = target;
  const created = await client.send(
    new CreateMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      ContentType: 'application/octet-stream',
      ...(target.sha256 !== undefined ? { Metadata: { sha256: target.sha256 } } : {}),
    }),
  );
  const uploadId = created.UploadId;
  if (uploadId === undefined) throw new Error('CreateMultipartUpload returned no UploadId');
  try {
    const parts: { PartNumber: number; ETag: string | undefined }[] = [];
    for (let first = 0, n = 1; first < target.size; first += target.partSize, n++) {
      const last = Math.min(first + target.partSize, target.size) - 1;
      parts.push({ PartNumber: n, ETag: await writePart(uploadId, n, first, last) });
    }
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts },
      }),
    );
  } catch (err) {
    await client
      .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }))
      .catch((abortErr: unknown) => target.logger.warn({ err: abortErr, key }, 'multipart abort failed'));
    throw err;
  }
}

/** Uploads a local file as `target` in parts. */
export function uploadInParts(target: MultipartTarget, file: string): Promise<void> {
  return inParts(target, async (uploadId, partNumber, first, last) => {
    const out = await target.client.send(
      new UploadPartCommand({
        Bucket: target.bucket,
        Key: target.key,
        UploadId: uploadId,
        PartNumber: partNumber,
        ContentLength: last - first + 1,
        Body: createReadStream(file, { start: first, end: last }),
      }),
    );
    return out.ETag;
  });
}

/** Copies `copySource` (`bucket/url-encoded-key`) to `target` inside the server, in parts. */
export function copyInParts(target: MultipartTarget, copySource: string): Promise<void> {
  return inParts(target, async (uploadId, partNumber, first, last) => {
    const out = await target.client.send(
      new UploadPartCopyCommand({
        Bucket: target.bucket,
        Key: target.key,
        UploadId: uploadId,
        PartNumber: partNumber,
        CopySource: copySource,
        CopySourceRange: `bytes=${first}-${last}`,
      }),
    );
    return out.CopyPartResult?.ETag;
  });
}
