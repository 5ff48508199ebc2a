// The one place errors meet the wire: typed errors map through errors.ts to `{code, message}` JSON, fastify's
// own client errors (bad JSON, body too large, unsupported media type) keep their 4xx status, and anything
// else is a 500 with a generic message. Causes are logged, never sent.

import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ClusterAccessRefused, CoveError, e2bErrorCode, httpStatus, InvalidNetworkPolicy } from '../errors.js';

const FASTIFY_MESSAGES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'request body is too large',
  FST_ERR_CTP_INVALID_JSON_BODY: 'request body is not valid JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'request body is empty',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported content type; send application/json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'content-length does not match the body',
};

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | Error, request, reply) => {
    if (err instanceof CoveError) {
      const status = httpStatus[err.code];
      if (status >= 500) request.log.error({ err, code: err.code }, err.message);
      const ec = err.errorCode ?? e2bErrorCode[err.code];
      const issues = err instanceof InvalidNetworkPolicy ? { issues: err.issues } : err instanceof ClusterAccessRefused ? { reason: err.reason } : {};
      return reply.status(status).send({ code: status, message: err.message, ...(ec ? { error_code: ec } : {}), ...issues });
    }
    const fe = err as FastifyError;
    if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') lingerOnRefusedBody(request, reply);
    if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
      const message = (fe.code && FASTIFY_MESSAGES[fe.code]) ?? (fe.code === 'FST_ERR_VALIDATION' ? fe.message : 'bad request');
      return reply.status(fe.statusCode).send({ code: fe.statusCode, message });
    }
    request.log.error({ err }, 'unhandled error');
    return reply.status(500).send({ code: 500, message: 'internal server error', error_code: 'internal_server_error' });
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    return reply.status(404).send({ code: 404, message: `route ${request.method} ${path} not found` });
  });
}

/** How much of a refused body is read and thrown away, and for how long, before the connection is closed instead. */
export const LINGER_BYTES = 16 * 1024 * 1024;
export const LINGER_MS = 10_000;

// Fastify answers an over-limit body with `Connection: close`, and Node then closes the socket while the client is
// still sending: the client gets EPIPE or a reset instead of the 413 (seen from undici on a 2 MiB body). Like a web
// server's lingering close, read the rest of the body and discard it, so the answer is read and the connection can
// be reused; a body beyond LINGER_BYTES, or one still arriving after LINGER_MS, ends in a close as before.
function lingerOnRefusedBody(request: FastifyRequest, reply: FastifyReply): void {
  const raw = request.raw;
  if (raw.readableEnded || raw.destroyed) return;
  reply.removeHeader('connection');
  let read = 0;
  const stop = (): void => {
    clearTimeout(timer);
    raw.off('data', onData);
    raw.off('end', stop);
    raw.off('error', stop);
  };
  const close = (): void => {
    stop();
    raw.socket?.destroy();
  };
  const onData = (chunk: Buffer): void => {
    read += chunk.length;
    if (read > LINGER_BYTES) close();
  };
  const timer = setTimeout(close, LINGER_MS);
  timer.unref();
  raw.on('data', onData);
  raw.once('end', stop);
  raw.once('error', stop);
  raw.resume();
}
