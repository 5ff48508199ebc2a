// Typed errors so callers (the orchestrator's build service) can map each to a clear build failure.

/** Base class: anything that went wrong talking to a registry or reading an image. */
export class OciError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The image reference is not a valid docker-style reference. */
export class InvalidImageRef extends OciError {
  constructor(
    readonly ref: string,
    reason: string,
  ) {
    super(`invalid image reference ${JSON.stringify(ref)}: ${reason}`);
  }
}

/** The repository, tag or digest does not exist in the registry (or has no manifest for our platform). */
export class ImageNotFound extends OciError {
  constructor(
    readonly image: string,
    detail?: string,
  ) {
    super(`image not found: ${image}${detail ? ` (${detail})` : ''}`);
  }
}

/** The registry refused our credentials (401/403). */
export class RegistryAuthError extends OciError {
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(`registry authentication failed (HTTP ${status}): ${detail}`);
  }
}

/** Content did not hash to the digest that named it. */
export class DigestMismatch extends OciError {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`digest mismatch: expected ${expected}, got ${actual}`);
  }
}

/** The image uses something we do not handle (schema 1, zstd layers, foreign layers...). */
export class UnsupportedImage extends OciError {}

/** Any other registry answer we cannot use. */
export class RegistryError extends OciError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A layer tar that tries to write outside its directory or is otherwise unusable. */
export class UnsafeLayer extends OciError {
  constructor(
    readonly entry: string,
    reason: string,
  ) {
    super(`refusing layer entry ${JSON.stringify(entry)}: ${reason}`);
  }
}
