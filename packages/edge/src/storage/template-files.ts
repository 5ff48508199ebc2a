// Template-build COPY files in cluster storage (docs/template-builds.md, "Edge"): the control plane asks
// `POST /v1/templates/files {teamId, hash}` and relays `{present, url}` to the SDK, which PUTs its tarball to
// the URL: the edge's own `PUT /storage/upload?token=…`, served by @cove/storage's createUploadHandler into the
// cluster store, local or S3. Not a presigned S3 PUT: the SDK does not say the size before it uploads, and a
// presigned PUT without a signed length takes up to 5 GiB per URL; the token carries COVE_UPLOAD_MAX_BYTES and
// the handler stops there. The URL names exactly `files/<teamId>/<hash>.tar` and lives one hour.
//
// Content verification is off: the SDK's filesHash covers paths, modes and bytes, not the gzipped tar it
// uploads, so no digest of the body can be checked here; the orchestrator checks filesHash when it builds.

import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  BuildFileUploads,
  UploadTokenSigner,
  createBlobStore,
  createUploadHandler,
  type BlobStore,
  type UploadHandler,
} from '@cove/storage';
import type { Logger } from 'pino';
import type { EdgeStorageConfig } from '../config.js';
import { EdgeError } from '../errors.js';

/** Lifetime of an upload URL (the contract's "valid 1 h"). */
export const UPLOAD_URL_TTL_SECONDS = 3600;
/** Path of the local driver's upload endpoint on the API port. */
export const UPLOAD_PATH = '/storage/upload';
/** A stalled upload (no bytes for this long) is cut, since the port has no whole-request timeout. */
const UPLOAD_IDLE_TIMEOUT_MS = 120_000;

/** The answer of `POST /v1/templates/files`. */
export interface TemplateFileAnswer {
  present: boolean;
  url?: string;
  headers?: Record<string, string>;
}

/** Cluster storage for COPY files: presence, upload URLs and (local driver) the upload endpoint. */
export class TemplateFiles {
  readonly store: BlobStore;
  private readonly signer: UploadTokenSigner;
  private readonly handler: UploadHandler;
  private uploads: BuildFileUploads | undefined;

  constructor(
    private readonly config: EdgeStorageConfig,
    private readonly log: Logger,
  ) {
    this.store = createBlobStore(config.storage, { logger: log });
    this.signer = new UploadTokenSigner({ secret: Buffer.from(config.uploadSecret, 'utf8') });
    this.handler = createUploadHandler({ store: this.store, signer: this.signer, logger: log });
  }

  /**
   * Fix where clients reach the API port; called once the port is known (listen). The configured
   * COVE_EDGE_PUBLIC_URL wins over `derived`.
   */
  setPublicUrl(derived: string): void {
    const base = this.config.publicUrl ?? derived;
    this.uploads = new BuildFileUploads({
      store: this.store,
      signer: this.signer,
      uploadBaseUrl: `${base}${UPLOAD_PATH}`,
      maxSize: this.config.uploadMaxBytes,
      verifyContentHash: false,
    });
  }

  /** `{present: true}`, or a URL for one PUT of `files/<teamId>/<hash>.tar`. */
  async describe(teamId: string, hash: string): Promise<TemplateFileAnswer> {
    const uploads = this.uploads;
    if (uploads === undefined) throw new EdgeError('internal', 'upload URLs are not available before the edge listens');
    if (await uploads.present(teamId, hash)) return { present: true };
    const { url, headers } = await uploads.createUploadUrl({ scope: teamId, hash, ttlSeconds: UPLOAD_URL_TTL_SECONDS });
    this.log.debug({ teamId, hash }, 'COPY files upload URL minted');
    return { present: false, url, headers };
  }

  /** Serve `PUT /storage/upload?token=…` (HTTP/1.1 or the HTTP/2 compatibility API). */
  handleUpload(req: IncomingMessage, res: ServerResponse): void {
    const handler = this.handler;
    // Checked here so a request without any token is told it is unauthenticated (401), not forbidden.
    if (req.method === 'PUT' && !new URL(req.url ?? '/', 'http://edge').searchParams.has('token')) {
      reply(res, 401, { code: 'unauthenticated', message: 'missing upload token (?token=)' }, req.httpVersionMajor === 1);
      return;
    }
    req.setTimeout(UPLOAD_IDLE_TIMEOUT_MS, () => req.destroy(new Error('upload stalled')));
    handler(req, res);
  }

  close(): void {
    (this.store as { close?: () => void }).close?.();
  }
}

function reply(res: ServerResponse, status: number, body: unknown, close = false): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    // The body was not read; closing spares draining an upload nobody will accept.
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(text);
}
