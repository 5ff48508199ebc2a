// Errors the control link answers itself (before or instead of reaching a node), in the protocol the caller
// spoke: gRPC status in trailers for `application/grpc*`, Connect's JSON error otherwise.

import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { EdgeErrorCode } from '../errors.js';

/** gRPC status codes the control link produces. */
export const GrpcCode = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** The one table from edge error codes to gRPC codes. */
export const GRPC_CODE: Record<EdgeErrorCode, number> = {
  unauthenticated: GrpcCode.UNAUTHENTICATED,
  permission_denied: GrpcCode.PERMISSION_DENIED,
  node_not_found: GrpcCode.NOT_FOUND,
  sandbox_not_found: GrpcCode.NOT_FOUND,
  not_found: GrpcCode.NOT_FOUND,
  invalid_argument: GrpcCode.INVALID_ARGUMENT,
  // gRPC has no size status of its own; a too-large message is an invalid argument there.
  payload_too_large: GrpcCode.INVALID_ARGUMENT,
  node_unavailable: GrpcCode.UNAVAILABLE,
  internal: GrpcCode.INTERNAL,
};

const CONNECT: Record<number, { name: string; http: number }> = {
  [GrpcCode.INVALID_ARGUMENT]: { name: 'invalid_argument', http: 400 },
  [GrpcCode.NOT_FOUND]: { name: 'not_found', http: 404 },
  [GrpcCode.PERMISSION_DENIED]: { name: 'permission_denied', http: 403 },
  [GrpcCode.INTERNAL]: { name: 'internal', http: 500 },
  [GrpcCode.UNAVAILABLE]: { name: 'unavailable', http: 503 },
  [GrpcCode.UNAUTHENTICATED]: { name: 'unauthenticated', http: 401 },
};

/** True when the request speaks gRPC (as opposed to the Connect protocol). */
export function isGrpc(req: Http2ServerRequest): boolean {
  return (req.headers['content-type'] ?? '').startsWith('application/grpc');
}

/** Answer with an error status; the body is drained so the client's stream can finish. */
export function replyRpcError(req: Http2ServerRequest, res: Http2ServerResponse, code: number, message: string): void {
  req.resume();
  if (res.headersSent) {
    res.stream.close();
    return;
  }
  if (isGrpc(req)) {
    res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/grpc' });
    res.addTrailers({ 'grpc-status': String(code), 'grpc-message': encodeURIComponent(message) });
    res.end();
    return;
  }
  const c = CONNECT[code] ?? { name: 'internal', http: 500 };
  res.writeHead(c.http, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ code: c.name, message }));
}
