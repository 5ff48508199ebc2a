// The upload endpoint behind the local driver's upload URLs (the counterpart of an S3 presigned PUT). It is a
// plain node:http handler so the edge or orchestrator can mount it under any path of an existing server. In
// fastify, register it in its own plugin with a catch-all content-type parser that leaves the body unread
// (`app.addContentTypeParser('*', (_req, _payload, done) => done(null))`), then
// `app.put('/storage/upload', (req, reply) => { reply.hijack(); handler(req.raw, reply.raw) })`; the E2B SDK
// sends tarballs with arbitrary content types, which fastify would otherwise refuse with 415.
//
// The body streams to a temp file while it is hashed and counted; it is published only when the token is
// valid, the length is within the token's limit and (when the token carries one) the sha256 matches.
// Anything else answers a JSON error and leaves nothing behind. It also runs under node:http2's
// compatibility API (HTTP/2 has no `connection` header; a stream is reset instead of a connection closed).

import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import type { BlobStore } from './blob-store.js';
import { HTTP_STATUS, TooLarge, UploadTokenInvalid, isStorageError } from './errors.js';
import type { UploadTokenSigner } from './upload-token.js';

/** Options of createUploadHandler. */
export interface UploadHandlerOptions {
  /** Where accepted uploads are written (normally the cluster's LocalBlobStore). */
  store: BlobStore;
  /** Verifies the `token` query parameter; must share its secret with the minting side. */
  signer: UploadTokenSigner;
  /** The host process's logger, already naming its part: the handler adds no field of its own to every line. */
  logger: Logger;
}

/** A node:http request handler. */
export type UploadHandler = (req: IncomingMessage, res: ServerResponse) => void;

function reply(res: ServerResponse, status: number, body: unknown, close = false): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(payload);
}

/**
 * Handler for `PUT <mount>?token=<upload token>` with the raw body. Answers 200 `{key,size,sha256}` on
 * success; 400 on a hash or length mismatch, 403 on an expired or forged token, 413 past the token's size
 * limit, 405 for other methods; every error is `{code, message}`.
 */
export function createUploadHandler(options: UploadHandlerOptions): UploadHandler {
  const { store, signer, logger } = options;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'PUT') {
      reply(res, 405, { code: 'method_not_allowed', message: 'use PUT' }, req.httpVersionMajor === 1);
      return;
    }
    const url = new URL(req.url ?? '/', 'http://upload.invalid');
    const token = url.searchParams.get('token');
    if (token === null) throw new UploadTokenInvalid();
    const claims = signer.verify(token);

    const header = req.headers['content-length'];
    const declared = header === undefined ? undefined : Number(header);
    if (declared !== undefined && declared > claims.maxSize) throw new TooLarge(claims.maxSize);

    // The store's pipeline destroys its source on failure; a PassThrough in between keeps the request (and so
    // the socket) alive long enough to answer with a JSON error.
    const body = new PassThrough();
    req.pipe(body);
    // pipe() does not forward a client disconnect; without this the store would wait for the rest forever.
    req.once('close', () => {
      if (!req.complete) body.destroy(new Error('client disconnected mid-body'));
    });
    const result = await store.put(claims.key, body, {
      maxSize: claims.maxSize,
      ...(declared !== undefined && Number.isSafeInteger(declared) ? { size: declared } : {}),
      ...(claims.sha256 !== undefined ? { sha256: claims.sha256 } : {}),
    });
    logger.info({ key: result.key, size: result.size }, 'upload stored');
    reply(res, 200, result);
  };

  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (req.destroyed && !req.complete) {
        // The client went away mid-body; the store already removed the partial file.
        logger.info('upload aborted by the client');
        return;
      }
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // Close the connection when the body was not read to the end, so an oversized upload is not drained.
      const close = !req.readableEnded && req.httpVersionMajor === 1;
      if (isStorageError(err)) {
        logger.info({ code: err.code }, 'upload refused');
        reply(res, HTTP_STATUS[err.code], { code: err.code, message: err.message }, close);
        return;
      }
      logger.error({ err }, 'upload failed');
      reply(res, 500, { code: 'internal', message: 'internal error' }, close);
    });
  };
}
