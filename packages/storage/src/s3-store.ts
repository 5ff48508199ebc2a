// S3-protocol driver (DESIGN.md §3, "many machines"): AWS S3, MinIO, Ceph RGW, GCS interop, R2 ...
//
// Staging spools the body to a local file while hashing it, and only a verified body is ever sent to the
// bucket. That keeps "a mismatch leaves nothing behind" true on every S3 implementation (a staging key in the
// bucket would need a server-side copy, limited to 5 GiB, and a cleanup that a crash can skip), and it tells
// us the exact length, which S3 needs for a streamed PUT. Bodies larger than `multipartThreshold` go up as a
// multipart upload (one PUT is limited to 5 GiB). The sha256 is stored as object metadata so `head` can report
// it.
//
// The SDK's default since 3.729 adds CRC32 checksums and `aws-chunked` trailer encoding to uploads; many
// S3-compatible servers reject or mis-store those, so checksums are computed only where the API requires
// them unless the caller opts in.

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Logger } from 'pino';
import type {
  BlobBody,
  BlobInfo,
  BlobStore,
  GetOptions,
  PutOptions,
  PutResult,
  StagedBlob,
} from './blob-store.js';
import { toReadable } from './body-stream.js';
import { BackendError, BlobNotFound, InvalidRange, TooLarge, isStorageError } from './errors.js';
import { FILE_CHUNK_BYTES } from './file-chunks.js';
import { HashingStream, checkDeclared, verifyReceived } from './hashing-stream.js';
import { checkKey, checkPrefix } from './keys.js';
import { copyInParts, uploadInParts, type MultipartTarget } from './s3-multipart.js';

/** Static credentials; when omitted the SDK's default provider chain (env, instance role ...) is used. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Options of the S3-protocol driver. */
export interface S3BlobStoreOptions {
  bucket: string;
  /** Key prefix inside the bucket, e.g. `cove/` (a trailing slash is added when missing). */
  prefix?: string;
  /** Endpoint URL for non-AWS servers, e.g. `http://127.0.0.1:9000`. */
  endpoint?: string;
  region?: string;
  /** Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need. */
  forcePathStyle?: boolean;
  credentials?: S3Credentials;
  /** Local directory for spooling bodies being staged; default `<os tmpdir>/cove-s3-spool`. */
  spoolDir?: string;
  /** Bodies above this many bytes are sent as a multipart upload; default 256 MiB. */
  multipartThreshold?: number;
  /** Part size of multipart uploads and copies; default 64 MiB (S3's minimum is 5 MiB, except the last part). */
  partSize?: number;
  /** Objects above this many bytes are copied in parts; default 5 GiB, the limit of one CopyObject. */
  copyThreshold?: number;
  /** Clock for presigned URLs' signing time; injectable so tests can mint already-expired URLs. */
  now?: () => Date;
  /** Send the SDK's flexible checksums on every request (AWS S3 accepts them; many others do not). */
  sdkChecksums?: boolean;
  logger: Logger;
}

/** A short-lived URL that lets a client PUT exactly one object. */
export interface PresignedPut {
  url: string;
  method: 'PUT';
  /** Headers the client must send with the PUT. */
  headers: Record<string, string>;
  expiresAt: Date;
}

const MiB = 1024 * 1024;

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function errName(err: unknown): string | undefined {
  return (err as { name?: string } | undefined)?.name;
}

/** BlobStore on an S3-protocol bucket. */
export class S3BlobStore implements BlobStore {
  readonly driver = 's3' as const;
  /** The SDK client (exposed for presigning and diagnostics). */
  readonly client: S3Client;
  readonly bucket: string;
  private readonly prefix: string;
  private readonly spoolDir: string;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly copyThreshold: number;
  private readonly logger: Logger;
  private readonly now: () => Date;

  constructor(options: S3BlobStoreOptions) {
    this.now = options.now ?? (() => new Date());
    this.bucket = options.bucket;
    const p = options.prefix ?? '';
    this.prefix = p === '' || p.endsWith('/') ? p : `${p}/`;
    this.spoolDir = options.spoolDir ?? join(tmpdir(), 'cove-s3-spool');
    this.multipartThreshold = options.multipartThreshold ?? 256 * MiB;
    this.partSize = options.partSize ?? 64 * MiB;
    this.copyThreshold = options.copyThreshold ?? 5 * 1024 * MiB;
    this.logger = options.logger.child({ storage: 's3', bucket: options.bucket });
    const checksums = options.sdkChecksums === true ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED';
    this.client = new S3Client({
      region: options.region ?? 'us-east-1',
      ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle ?? false,
      ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
      requestChecksumCalculation: checksums,
      responseChecksumValidation: checksums,
    });
  }

  private objectKey(key: string): string {
    return this.prefix + checkKey(key);
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const range = options.range;
    if (range !== undefined && (range.start < 0 || (range.end !== undefined && range.end < range.start))) {
      throw new InvalidRange(key);
    }
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.objectKey(key),
          ...(range !== undefined ? { Range: `bytes=${range.start}-${range.end ?? ''}` } : {}),
        }),
      );
      return out.Body as Readable;
    } catch (err) {
      throw this.translate('get', key, err);
    }
  }

  async stage(body: BlobBody, options: PutOptions = {}): Promise<StagedBlob> {
    checkDeclared(options);
    if (body instanceof Uint8Array) {
      // Already in memory: hash it here, no spool file needed.
      const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      if (options.maxSize !== undefined && bytes.length > options.maxSize) throw new TooLarge(options.maxSize);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      verifyReceived(options, bytes.length, sha256);
      return this.staged({ bytes }, bytes.length, sha256);
    }
    await mkdir(this.spoolDir, { recursive: true });
    const file = join(this.spoolDir, randomBytes(16).toString('hex'));
    const hasher = new HashingStream(options);
    const out = createWriteStream(file, { flags: 'wx', mode: 0o600, highWaterMark: FILE_CHUNK_BYTES });
    const closed = new Promise<void>((resolve) => (out.closed ? resolve() : out.once('close', () => resolve())));
    try {
      await pipeline(toReadable(body), hasher, out);
      const sha256 = hasher.digest();
      verifyReceived(options, hasher.size, sha256);
      return this.staged({ file }, hasher.size, sha256);
    } catch (err) {
      // The file stream may still be opening (creating the file) when the pipeline rejects: remove it after.
      await closed;
      await rm(file, { force: true });
      if (isStorageError(err)) throw err;
      throw new BackendError('put', { cause: err });
    }
  }

  private staged(source: { bytes: Buffer } | { file: string }, size: number, sha256: string): StagedBlob {
    const discard = async (): Promise<void> => {
      if ('file' in source) await rm(source.file, { force: true });
    };
    return {
      size,
      sha256,
      commit: async (key: string): Promise<PutResult> => {
        const objectKey = this.objectKey(key);
        try {
          if ('file' in source && size > this.multipartThreshold) {
            await uploadInParts(this.parts(objectKey, size, sha256), source.file);
          } else {
            await this.client.send(
              new PutObjectCommand({
                Bucket: this.bucket,
                Key: objectKey,
                Body: 'bytes' in source ? source.bytes : createReadStream(source.file),
                ContentLength: size,
                ContentType: 'application/octet-stream',
                Metadata: { sha256 },
              }),
            );
          }
        } catch (err) {
          throw this.translate('put', key, err);
        } finally {
          await discard();
        }
        return { key, size, sha256 };
      },
      discard,
    };
  }

  private parts(key: string, size: number, sha256: string | undefined): MultipartTarget {
    return {
      client: this.client,
      bucket: this.bucket,
      key,
      size,
      partSize: this.partSize,
      logger: this.logger,
      ...(sha256 !== undefined ? { sha256 } : {}),
    };
  }

  async put(key: string, body: BlobBody, options: PutOptions = {}): Promise<PutResult> {
    checkKey(key);
    const staged = await this.stage(body, options);
    return staged.commit(key);
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
      const sha256 = out.Metadata?.sha256;
      return {
        key,
        size: out.ContentLength ?? 0,
        lastModified: out.LastModified ?? new Date(0),
        ...(sha256 !== undefined ? { sha256 } : {}),
      };
    } catch (err) {
      if (isStorageError(err)) throw err;
      if (status(err) === 404) return undefined;
      throw this.translate('head', key, err);
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.head(key)) !== undefined;
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    } catch (err) {
      if (status(err) === 404) return;
      throw this.translate('delete', key, err);
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    checkPrefix(prefix);
    let token: string | undefined;
    do {
      let out;
      try {
        out = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix + prefix,
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        );
      } catch (err) {
        throw this.translate('list', prefix, err);
      }
      for (const item of out.Contents ?? []) {
        if (item.Key === undefined) continue;
        yield {
          key: item.Key.slice(this.prefix.length),
          size: item.Size ?? 0,
          lastModified: item.LastModified ?? new Date(0),
        };
      }
      token = out.IsTruncated === true ? out.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async copy(from: string, to: string): Promise<void> {
    const copySource = `${this.bucket}/${this.objectKey(from).split('/').map(encodeURIComponent).join('/')}`;
    const key = this.objectKey(to);
    try {
      const source = await this.head(from);
      if (source === undefined) throw new BlobNotFound(from);
      if (source.size > this.copyThreshold) {
        await copyInParts(this.parts(key, source.size, source.sha256), copySource);
        return;
      }
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: key, CopySource: copySource }));
    } catch (err) {
      throw this.translate('copy', from, err);
    }
  }

  /**
   * A presigned PUT for `key`, valid for `ttlSeconds`, of exactly `size` bytes: the Content-Length is signed, so
   * the server refuses a body of any other length (an unsized presigned PUT would let its holder store up to
   * S3's 5 GiB per URL). S3 cannot check a body's sha256 against a presigned URL
   * without the client sending a checksum header, so readers of uploaded objects verify content themselves.
   */
  async presignPut(key: string, ttlSeconds: number, size: number): Promise<PresignedPut> {
    if (!(Number.isSafeInteger(size) && size >= 0)) throw new RangeError('size must be a non-negative integer');
    const command = new PutObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key), ContentLength: size });
    const signingDate = this.now();
    const url = await getSignedUrl(this.client, command, {
      expiresIn: ttlSeconds,
      signingDate,
      signableHeaders: new Set(['content-length']),
    });
    return {
      url,
      method: 'PUT',
      headers: { 'content-length': String(size) },
      expiresAt: new Date(signingDate.getTime() + ttlSeconds * 1000),
    };
  }

  /** Releases the SDK's sockets. */
  close(): void {
    this.client.destroy();
  }

  private translate(operation: string, key: string, err: unknown): Error {
    if (isStorageError(err)) return err;
    const code = status(err);
    const name = errName(err);
    if (code === 404 || name === 'NoSuchKey' || name === 'NotFound') return new BlobNotFound(key, { cause: err });
    if (code === 416 || name === 'InvalidRange') return new InvalidRange(key, { cause: err });
    this.logger.debug({ err, operation, key }, 's3 operation failed');
    return new BackendError(operation, { cause: err });
  }
}

