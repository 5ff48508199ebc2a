// Public surface of @cove/storage: cluster storage for template artifacts, snapshots and build uploads.

export type {
  BlobBody,
  BlobInfo,
  BlobStore,
  ByteRange,
  GetOptions,
  PutOptions,
  PutResult,
  StagedBlob,
} from './blob-store.js';
export { LocalBlobStore, type LocalBlobStoreOptions } from './local-store.js';
export { S3BlobStore, type S3BlobStoreOptions, type S3Credentials, type PresignedPut } from './s3-store.js';
export {
  CachedStore,
  type CachedStoreOptions,
  type CacheLease,
  type CacheStats,
} from './cached-store.js';
export { putArtifact, getArtifact, hasArtifact, type ArtifactPut, type ArtifactPutOptions } from './artifacts.js';
export { HashingStream } from './hashing-stream.js';
export { FILE_CHUNK_BYTES } from './file-chunks.js';
export {
  BuildFileUploads,
  type BuildFileUploadsOptions,
  type PresigningStore,
  type UploadUrl,
  type UploadUrlRequest,
} from './build-files.js';
export { UploadTokenSigner, type UploadClaims, type UploadTokenSignerOptions } from './upload-token.js';
export { createUploadHandler, type UploadHandler, type UploadHandlerOptions } from './upload-handler.js';
export {
  parseStorageUrl,
  createBlobStore,
  type StorageConfig,
  type LocalStorageConfig,
  type S3StorageConfig,
  type StorageConfigOptions,
} from './config.js';
export { artifactKey, buildFileKey, checkKey, checkPrefix, isSha256Hex, MAX_KEY_BYTES, secretKey } from './keys.js';
export {
  StorageError,
  InvalidKey,
  BlobNotFound,
  InvalidRange,
  HashMismatch,
  SizeMismatch,
  TooLarge,
  UploadTokenInvalid,
  UploadTokenExpired,
  InvalidStorageConfig,
  Unsupported,
  BackendError,
  HTTP_STATUS,
  isStorageError,
  type StorageErrorCode,
} from './errors.js';
export {
  signDocument,
  verifyDocument,
  canonicalJson,
  bindArtifactKey,
  artifactKeyOf,
  DocumentUntrusted,
  MIN_ARTIFACT_KEY_LENGTH,
} from './signed-document.js';
export { downloadVerified, type VerifiedDownloadOptions } from './verified-download.js';
