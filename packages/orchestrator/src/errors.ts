// The orchestrator's failures a caller can act on. Domain code throws these; the RPC boundary
// (rpc/error-interceptor.ts) is the one place that turns a code into a Connect code.

import { NODE_RESTORE_FAILED } from '@cove/contracts/link';

export type OrchestratorErrorCode =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'permission_denied'
  | 'sandbox_not_found'
  | 'sandbox_exists'
  | 'template_not_found'
  | 'template_not_ready'
  | 'node_draining'
  | 'node_full'
  | 'node_disk_full'
  | 'envd_init_failed'
  | 'sandbox_busy'
  | 'checkpoint_failed'
  | 'snapshot_not_found'
  | 'snapshot_corrupt'
  | typeof NODE_RESTORE_FAILED
  | 'volumes_unavailable';

export class OrchestratorError extends Error {
  constructor(
    readonly code: OrchestratorErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** One or more request fields are bad; `violations` names each (field: reason). */
export class InvalidArgument extends OrchestratorError {
  constructor(readonly violations: string[]) {
    super('invalid_argument', violations.join('; '));
  }
}

export class Unauthenticated extends OrchestratorError {
  constructor() {
    super('unauthenticated', 'missing node token');
  }
}

export class PermissionDenied extends OrchestratorError {
  constructor() {
    super('permission_denied', 'invalid node token');
  }
}

export class SandboxNotFound extends OrchestratorError {
  constructor(readonly sandboxId: string) {
    super('sandbox_not_found', `sandbox ${sandboxId} is not on this node`);
  }
}

export class SandboxExists extends OrchestratorError {
  constructor(readonly sandboxId: string) {
    super('sandbox_exists', `sandbox ${sandboxId} already exists on this node`);
  }
}

export class TemplateNotFound extends OrchestratorError {
  constructor(readonly templateId: string) {
    super('template_not_found', `template ${templateId} is not available on this node`);
  }
}

/**
 * A built-in template this node builds in the background is not ready yet (`building`) or its last build failed
 * (`failed`, retried later): another node may have it, and this one will. UNAVAILABLE, answered at once.
 */
export class TemplateNotReady extends OrchestratorError {
  constructor(readonly templateId: string, readonly state: 'building' | 'failed') {
    super(
      'template_not_ready',
      state === 'building'
        ? `template ${templateId} is still being built on this node; try again shortly`
        : `template ${templateId} failed to build on this node (retried in the background)`,
    );
  }
}

export class NodeDraining extends OrchestratorError {
  constructor() {
    super('node_draining', 'node is draining and accepts no new sandboxes');
  }
}

export class NodeFull extends OrchestratorError {
  /**
   * `boots`: as many Creates already wait to boot as the node lets wait, or the wait for a boot would be longer than
   * it lets a Create wait (boot-permits.ts); `waitMs` is that expected wait.
   */
  constructor(
    readonly resource: 'sandboxes' | 'cpu' | 'memory' | 'boots',
    waitMs?: number,
  ) {
    super(
      'node_full',
      resource !== 'boots'
        ? `node has no room for the sandbox (${resource})`
        : waitMs === undefined
          ? 'node has no room for the sandbox (boots: too many creates already wait to boot)'
          : `node has no room for the sandbox (boots: a boot would start in ~${Math.round(waitMs / 1000)} s)`,
    );
  }
}

/** envd inside the slot did not accept POST /init. The cause is kept for logs. */
export class EnvdInitFailed extends OrchestratorError {
  constructor(readonly sandboxId: string, options?: ErrorOptions) {
    super('envd_init_failed', `envd of sandbox ${sandboxId} did not initialise`, options);
  }
}

/** The sandbox is being paused, snapshotted or deleted: try again once that is over. */
export class SandboxBusy extends OrchestratorError {
  constructor(readonly sandboxId: string, what: string) {
    super('sandbox_busy', `sandbox ${sandboxId} is ${what}`);
  }
}

/** The sandbox's processes could not be checkpointed; it keeps running. */
export class CheckpointFailed extends OrchestratorError {
  constructor(readonly sandboxId: string, options?: ErrorOptions) {
    super('checkpoint_failed', `sandbox ${sandboxId} could not be checkpointed: ${(options?.cause as Error | undefined)?.message ?? 'unknown error'}`, options);
  }
}

export class SnapshotNotFound extends OrchestratorError {
  constructor(readonly snapshotId: string) {
    super('snapshot_not_found', `snapshot ${snapshotId} is not in cluster storage`);
  }
}

/**
 * The node's disk has no room for what a call needs to write (a snapshot's download or unpack, a slot's disk): a
 * condition of this node, not of the request; another node may take it.
 */
export class NodeDiskFull extends OrchestratorError {
  constructor(what: string, options?: ErrorOptions) {
    super('node_disk_full', `the node's disk has no room for ${what}`, options);
  }
}

/** True for an error, or one it was caused by, that a write on a full filesystem raised (errno ENOSPC). */
export function isNoSpace(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { code?: unknown }).code === 'ENOSPC') return true;
  }
  return false;
}

/** A snapshot's manifest is unreadable or one of its artifacts is missing or does not match its digest. */
export class SnapshotCorrupt extends OrchestratorError {
  constructor(readonly snapshotId: string, why: string, options?: ErrorOptions) {
    super('snapshot_corrupt', `snapshot ${snapshotId} is corrupt: ${why}`, options);
  }
}

/**
 * A snapshot's processes could not be restored on this node (CRIU failed on files that were verified, or are the
 * node's own): not proof the snapshot is bad, since a CRIU or kernel limit of this node fails the same way.
 */
export class SnapshotRestoreFailed extends OrchestratorError {
  constructor(readonly snapshotId: string, why: string, options?: ErrorOptions) {
    super(NODE_RESTORE_FAILED, `snapshot ${snapshotId} could not be restored on this node: ${why}`, options);
  }
}

/** The spec has team volumes and this node has no volume directory (COVE_VOLUMES_DIR). FAILED_PRECONDITION. */
export class VolumesNotAvailable extends OrchestratorError {
  constructor() {
    super('volumes_unavailable', 'this node has no volume directory (COVE_VOLUMES_DIR): team volumes cannot be mounted here');
  }
}
