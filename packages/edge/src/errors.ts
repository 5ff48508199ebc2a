// The edge's error catalogue. Domain code throws these; the REST boundary (api/rest-api.ts) and the control
// link (control-link/grpc-reply.ts) are the only places that turn a code into an HTTP status or gRPC code.

/** Every failure an edge caller can act on. */
export type EdgeErrorCode =
  | 'unauthenticated'
  | 'permission_denied'
  | 'node_not_found'
  | 'sandbox_not_found'
  | 'invalid_argument'
  | 'payload_too_large'
  | 'node_unavailable'
  | 'not_found'
  | 'internal';

/** Base class of the edge's typed errors: a stable `code` plus a client-safe message. */
export class EdgeError extends Error {
  constructor(
    readonly code: EdgeErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A node id the registry does not know (never registered, or forgotten after missing heartbeats). */
export class NodeNotFound extends EdgeError {
  constructor(readonly nodeId: string) {
    super('node_not_found', `node ${nodeId} is not registered with this edge`);
  }
}

/** A sandbox id the catalog does not know. */
export class SandboxNotFound extends EdgeError {
  constructor(readonly sandboxId: string) {
    super('sandbox_not_found', `sandbox ${sandboxId} is not known to this edge`);
  }
}

/** A node that is registered but could not be reached or answered with an error. */
export class NodeUnavailable extends EdgeError {
  constructor(readonly nodeId: string, options?: ErrorOptions) {
    super('node_unavailable', `node ${nodeId} is unavailable`, options);
  }
}

/** A request the edge cannot act on (bad JSON, a field out of range); the message says which. */
export class InvalidArgument extends EdgeError {
  constructor(message: string) {
    super('invalid_argument', message);
  }
}

/** A request body over the limit of its route; nothing of it was used. */
export class PayloadTooLarge extends EdgeError {
  constructor(readonly limit: number) {
    super('payload_too_large', `request body larger than ${limit} bytes`);
  }
}

/** HTTP status per error code; the one table the REST API uses. */
export const HTTP_STATUS: Record<EdgeErrorCode, number> = {
  unauthenticated: 401,
  permission_denied: 403,
  node_not_found: 404,
  sandbox_not_found: 404,
  invalid_argument: 400,
  payload_too_large: 413,
  node_unavailable: 502,
  not_found: 404,
  internal: 500,
};
