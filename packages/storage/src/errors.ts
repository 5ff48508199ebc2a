// The storage library's error catalogue. Drivers translate backend failures (ENOENT, S3 404/416, ...) into
// these once, so callers match on `code` and the only HTTP table is HTTP_STATUS below (used by the upload
// endpoint, and by any component that surfaces storage failures over HTTP).

/** Every storage failure a caller can act on. */
export type StorageErrorCode =
  | 'invalid_key'
  | 'not_found'
  | 'invalid_range'
  | 'hash_mismatch'
  | 'size_mismatch'
  | 'too_large'
  | 'upload_token_invalid'
  | 'upload_token_expired'
  | 'invalid_config'
  | 'unsupported'
  | 'backend';

/** Base class of every typed storage error: a stable `code` plus a message safe to show a client. */
export class StorageError extends Error {
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A key that is empty, absolute, contains `..`/`.` segments, empty segments, backslashes or control bytes. */
export class InvalidKey extends StorageError {
  constructor(readonly key: string, reason: string) {
    super('invalid_key', `invalid storage key: ${reason}`);
  }
}

/** The object does not exist. */
export class BlobNotFound extends StorageError {
  constructor(readonly key: string, options?: ErrorOptions) {
    super('not_found', `no object ${key}`, options);
  }
}

/** A byte range that starts at or past the end of the object, or ends before it starts. */
export class InvalidRange extends StorageError {
  constructor(readonly key: string, options?: ErrorOptions) {
    super('invalid_range', `range not satisfiable for ${key}`, options);
  }
}

/** The content's sha256 differs from the one the writer declared; nothing was stored. */
export class HashMismatch extends StorageError {
  constructor(readonly expected: string, readonly actual: string) {
    super('hash_mismatch', `content sha256 ${actual} does not match the declared ${expected}`);
  }
}

/** The content's length differs from the one the writer declared; nothing was stored. */
export class SizeMismatch extends StorageError {
  constructor(readonly expected: number, readonly actual: number) {
    super('size_mismatch', `content is ${actual} bytes, ${expected} were declared`);
  }
}

/** The content exceeds the allowed size; nothing was stored. */
export class TooLarge extends StorageError {
  constructor(readonly limit: number) {
    super('too_large', `content exceeds the limit of ${limit} bytes`);
  }
}

/** An upload token that is malformed, has a bad signature, or does not match the request. */
export class UploadTokenInvalid extends StorageError {
  constructor() {
    super('upload_token_invalid', 'upload token is invalid');
  }
}

/** An upload token whose expiry has passed. */
export class UploadTokenExpired extends StorageError {
  constructor() {
    super('upload_token_expired', 'upload token has expired');
  }
}

/** A storage URL or option set that cannot be used; `issues` lists every problem found. */
export class InvalidStorageConfig extends StorageError {
  constructor(readonly issues: readonly string[]) {
    super('invalid_config', `invalid storage configuration: ${issues.join('; ')}`);
  }
}

/** An operation this driver cannot perform (e.g. minting an upload URL without a signing secret). */
export class Unsupported extends StorageError {
  constructor(what: string) {
    super('unsupported', what);
  }
}

/** The backend (file system, S3 endpoint) failed; the cause is kept for logs and never sent to clients. */
export class BackendError extends StorageError {
  constructor(operation: string, options?: ErrorOptions) {
    super('backend', `storage backend failed during ${operation}`, options);
  }
}

/** HTTP status per error code: the one table an HTTP boundary uses for storage failures. */
export const HTTP_STATUS: Record<StorageErrorCode, number> = {
  invalid_key: 400,
  not_found: 404,
  invalid_range: 416,
  hash_mismatch: 400,
  size_mismatch: 400,
  too_large: 413,
  upload_token_invalid: 403,
  upload_token_expired: 403,
  invalid_config: 500,
  unsupported: 501,
  backend: 502,
};

/** True when `err` is a storage error with the given code (works across duplicate copies of this package). */
export function isStorageError(err: unknown, code?: StorageErrorCode): err is StorageError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && c in HTTP_STATUS && (code === undefined || c === code);
}
