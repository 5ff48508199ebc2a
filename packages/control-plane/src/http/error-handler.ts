// The one place errors meet the wire: typed errors map through errors.ts to `{code, message}` JSON, fastify's
// own client errors (bad JSON, body too large, unsupported media type) keep their 4xx status, and anything
// else is a 500 with a generic message. Causes are logged, never sent.

import type { FastifyError, FastifyInstance } from 'fastify';
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
