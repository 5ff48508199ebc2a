// Every failure a caller can act on has a code here; http/error-handler.ts is the one place codes meet the wire.

import type { PolicyIssue } from '@cove/egress';

export type ErrorCode =
  | 'bad_request'
  | 'unauthenticated'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'sandbox_limit'
  | 'quota_exceeded'
  | 'no_capacity'
  | 'template_not_ready'
  | 'cluster_unavailable'
  | 'not_implemented'
  | 'snapshot_missing'
  | 'snapshot_corrupt'
  | 'snapshot_restore_failed'
  | 'operation_failed'
  | 'internal';

export class CoveError extends Error {
  /** A finer machine-readable code for the body's `error_code`, where the code alone does not say enough. */
  readonly errorCode?: string;

  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class BadRequest extends CoveError {
  constructor(message: string) {
    super('bad_request', message);
  }
}

/** A `network` config @cove/egress refuses: every issue at once, with field paths, in the 400's `issues`. */
export class InvalidNetworkPolicy extends CoveError {
  override readonly errorCode = 'invalid_network_policy';
  constructor(readonly issues: PolicyIssue[]) {
    super('bad_request', `invalid network policy: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`);
  }
}

export class Unauthenticated extends CoveError {
  constructor(message = 'Invalid API key') {
    super('unauthenticated', message);
  }
}

export class Forbidden extends CoveError {
  constructor(message: string) {
    super('forbidden', message);
  }
}

export class NotFound extends CoveError {
  constructor(message: string) {
    super('not_found', message);
  }
}

export class SandboxNotFound extends NotFound {
  constructor(readonly sandboxId: string) {
    super(`sandbox "${sandboxId}" doesn't exist or you don't have access to it`);
  }
}

export class Conflict extends CoveError {
  constructor(message: string) {
    super('conflict', message);
  }
}

/** E2B's wording, so users of the SDK recognise it. */
export class SandboxLimitReached extends CoveError {
  constructor(readonly limit: number) {
    super(
      'sandbox_limit',
      `You have reached the maximum number of concurrent E2B sandboxes (${limit}). ` +
        'If you need more, please contact your Cove operator to raise the team limit.',
    );
  }
}

/** Which per-team quota a request ran into (`error_code` on the wire). */
export type Quota = 'template_build_limit' | 'template_limit' | 'snapshot_limit' | 'volume_limit' | 'secret_limit';

/**
 * A per-team quota (concurrent template builds, templates, persistent snapshots). 429 like E2B's sandbox limit:
 * the SDK turns it into its RateLimitError with this message, and no Retry-After is sent, because only the team's
 * own action (a build finishing, a deletion) frees room, not time.
 */
export class QuotaExceeded extends CoveError {
  override readonly errorCode: Quota;

  constructor(quota: Quota, readonly limit: number, message: string) {
    super('quota_exceeded', message);
    this.errorCode = quota;
  }
}

export class NoCapacity extends CoveError {
  constructor(message = 'no node has capacity for this sandbox') {
    super('no_capacity', message);
  }
}

/**
 * No node that could take the sandbox has the built-in template ready yet (nodes build it in the background
 * after they start). 503: it passes with time, not with anything the caller changes.
 */
export class TemplateNotReady extends CoveError {
  constructor(readonly templateRef: string) {
    super('template_not_ready', `template '${templateRef}' is not ready on any node yet: nodes prepare it in the background after they start (about a minute the first time); try again shortly`);
  }
}

export class ClusterUnavailable extends CoveError {
  constructor(message: string, options?: ErrorOptions) {
    super('cluster_unavailable', message, options);
  }
}

/**
 * The cluster's gate refused the control plane: its customer's identity provider would not issue a token (the
 * client was disabled, its secret is wrong) or the edge refused the one sent. The body's `reason` is the
 * refusal's own code (`client_refused`, `token_expired`, …), so callers see why without parsing the message.
 */
export class ClusterAccessRefused extends ClusterUnavailable {
  override readonly errorCode = 'cluster_access_refused';
  constructor(
    message: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export class NotImplemented extends CoveError {
  constructor(what: string) {
    super('not_implemented', `${what} is not implemented yet`);
  }
}

/**
 * A snapshot a sandbox needs is not in cluster storage (the node answered NOT_FOUND). 410: it existed and is gone;
 * nothing the caller can send fixes it. A paused sandbox stays paused (it can still be killed).
 */
export class SnapshotMissing extends CoveError {
  constructor(readonly snapshotId: string, what: string) {
    super('snapshot_missing', `${what}: snapshot '${snapshotId}' is missing from cluster storage`);
  }
}

/** A snapshot's artifacts are missing or do not match their digests (DATA_LOSS from the node). */
export class SnapshotCorrupt extends CoveError {
  constructor(readonly snapshotId: string, what: string, detail: string) {
    super('snapshot_corrupt', `${what}: snapshot '${snapshotId}' is corrupt in cluster storage (${detail})`);
  }
}

/**
 * No node could restore a snapshot's processes (the nodes verified its files; CRIU failed on them): not proof the
 * snapshot is bad, nor that storage is. A paused sandbox stays paused and can be resumed again or killed.
 */
export class SnapshotRestoreFailed extends CoveError {
  constructor(readonly snapshotId: string, what: string, detail: string) {
    super('snapshot_restore_failed', `${what}: snapshot '${snapshotId}' could not be restored on any node that tried (${detail})`);
  }
}

/**
 * The node refused an operation it understood (a pause or snapshot of a sandbox it cannot checkpoint, or one
 * busy with another operation); the sandbox is as it was. Not 409: the SDK reads a 409 on pause as "already paused".
 */
export class OperationFailed extends CoveError {
  constructor(message: string, options?: ErrorOptions) {
    super('operation_failed', message, options);
  }
}

/** HTTP status per code; the SDK reads `code` in the body, which repeats the status. */
export const httpStatus: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  sandbox_limit: 429,
  quota_exceeded: 429,
  no_capacity: 503,
  template_not_ready: 503,
  cluster_unavailable: 502,
  not_implemented: 501,
  snapshot_missing: 410,
  snapshot_corrupt: 500,
  snapshot_restore_failed: 500,
  operation_failed: 500,
  internal: 500,
};

/** E2B's machine-readable `error_code` for the failures it names. */
export const e2bErrorCode: Partial<Record<ErrorCode, string>> = {
  no_capacity: 'sandbox_capacity_unavailable',
  template_not_ready: 'template_not_ready',
  cluster_unavailable: 'sandbox_create_failed',
  snapshot_missing: 'snapshot_not_found',
  snapshot_corrupt: 'snapshot_corrupt',
  internal: 'internal_server_error',
};
