// Template-build COPY tarballs (E2B's `<teamId>/files/<hash>.tar`, here `files/<teamId>/<hash>.tar`): the SDK
// asks `GET /templates/{id}/files/{hash}`, gets `{present, url}`, and PUTs the tarball straight to cluster
// storage through a URL minted inside the cluster (reference/e2b-infra.md §1.4, §7.1). Every URL bounds what
// it stores: a presigned S3 PUT only when the exact size is known up front (it is signed as Content-Length —
// S3 has no maximum for a presigned PUT, and the SDK cannot send the POST policy that would carry one); else
// — the E2B SDK never says the size before it uploads — a URL of createUploadHandler, authorised by a signed
// token that carries `maxSize`, which relays into any store (local or S3) and stops at that many bytes.
//
// Caveat on hashes: the E2B SDK's filesHash is sha256 over "COPY src dest" plus each file's path, mode, size
// and bytes, not the sha256 of the (gzipped) tar it uploads. Content verification therefore has to be turned
// off (`verifyContentHash: false`) for uploads from the unchanged E2B SDK; it is on by default for Cove's own
// clients, which name uploads by the tarball's digest.

import type { BlobStore } from './blob-store.js';
import { Unsupported } from './errors.js';
import { buildFileKey } from './keys.js';
import type { PresignedPut } from './s3-store.js';
import type { UploadTokenSigner } from './upload-token.js';

/** A store that can mint presigned PUT URLs itself (the S3 driver). */
export interface PresigningStore extends BlobStore {
  presignPut(key: string, ttlSeconds: number, size: number): Promise<PresignedPut>;
}

function canPresign(store: BlobStore): store is PresigningStore {
  return typeof (store as Partial<PresigningStore>).presignPut === 'function';
}

/** Options of BuildFileUploads. */
export interface BuildFileUploadsOptions {
  store: BlobStore;
  /** Signs local upload tokens; required when the store cannot presign. */
  signer?: UploadTokenSigner;
  /** Absolute URL where createUploadHandler is mounted, e.g. `http://10.0.0.5:3001/storage/upload`. */
  uploadBaseUrl?: string;
  /** Largest tarball any URL accepts (the endpoint's token limit, or the bound on a presigned size); default 5 GiB. */
  maxSize?: number;
  /** Require the body's sha256 to equal the hash in the key (local endpoint only); default true. */
  verifyContentHash?: boolean;
}

/** What a client needs to upload one object. */
export interface UploadUrl {
  url: string;
  method: 'PUT';
  /** Headers to send with the PUT (may be empty). */
  headers: Record<string, string>;
  expiresAt: Date;
}

/** Identifies one COPY tarball and how long its URL should live. */
export interface UploadUrlRequest {
  /** Team id (E2B's cacheScope). */
  scope: string;
  /** The COPY step's filesHash, lowercase hex sha256. */
  hash: string;
  ttlSeconds: number;
  /** Exact byte size, when the client said it up front: a presigning store then signs it as Content-Length. */
  size?: number;
}

/** Presence check and upload-URL minting for template-build COPY tarballs. */
export class BuildFileUploads {
  private readonly maxSize: number;
  private readonly verify: boolean;

  constructor(private readonly options: BuildFileUploadsOptions) {
    this.maxSize = options.maxSize ?? 5 * 1024 ** 3;
    this.verify = options.verifyContentHash ?? true;
    if (!canPresign(options.store) && (options.signer === undefined || options.uploadBaseUrl === undefined)) {
      throw new Unsupported('a store that cannot presign needs a signer and an uploadBaseUrl');
    }
    if (!(this.maxSize > 0)) throw new RangeError('maxSize must be positive');
  }

  /** The object key of a COPY tarball: `files/<scope>/<hash>.tar`. */
  key(scope: string, hash: string): string {
    return buildFileKey(scope, hash);
  }

  /** True when the tarball is already stored. */
  present(scope: string, hash: string): Promise<boolean> {
    return this.options.store.exists(this.key(scope, hash));
  }

  /** A short-lived URL that allows one bounded PUT of exactly this tarball and nothing else. */
  async createUploadUrl(request: UploadUrlRequest): Promise<UploadUrl> {
    const key = this.key(request.scope, request.hash);
    if (!(request.ttlSeconds > 0)) throw new RangeError('ttlSeconds must be positive');
    const { size } = request;
    if (size !== undefined && !(Number.isSafeInteger(size) && size >= 0 && size <= this.maxSize)) {
      throw new RangeError(`size must be an integer from 0 to ${this.maxSize}`);
    }
    const { store, signer, uploadBaseUrl } = this.options;
    if (canPresign(store) && size !== undefined) return store.presignPut(key, request.ttlSeconds, size);
    if (signer === undefined || uploadBaseUrl === undefined) {
      throw new Unsupported('an upload of unknown size needs the upload endpoint (a signer and an uploadBaseUrl): a presigned PUT would be unbounded');
    }
    const { token, expiresAt } = signer.sign({
      key,
      ttlSeconds: request.ttlSeconds,
      maxSize: this.maxSize,
      ...(this.verify ? { sha256: request.hash } : {}),
    });
    const url = new URL(uploadBaseUrl);
    url.searchParams.set('token', token);
    return { url: url.toString(), method: 'PUT', headers: {}, expiresAt };
  }

  /** E2B's `GET /templates/{id}/files/{hash}` answer: `{present}` or `{present: false, url}`. */
  async describe(request: UploadUrlRequest): Promise<{ present: boolean; url?: string }> {
    if (await this.present(request.scope, request.hash)) return { present: true };
    const { url } = await this.createUploadUrl(request);
    return { present: false, url };
  }
}
