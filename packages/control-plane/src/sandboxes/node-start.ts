// Starting a sandbox on one of the cluster's nodes: the Create call tried over placement's candidates, best
// first, shared by fresh creates, resumes and creates from a persistent snapshot. Throws typed errors only.

import { Code } from '@connectrpc/connect';
import type { SandboxInfo } from '@cove/contracts/orchestrator';
import type { Logger } from 'pino';
import { NODE_RESTORE_FAILED } from '@cove/contracts/link';
import { LinkCallError, type ControlLink, type SandboxSpecInit } from '../cluster/control-link.js';
import type { Candidate } from '../cluster/placement.js';
import { ClusterUnavailable, NoCapacity, NotFound, SnapshotCorrupt, SnapshotMissing, SnapshotRestoreFailed } from '../errors.js';

/** Control-link codes after which another node may well succeed. */
const TRY_NEXT = new Set([Code.NotFound, Code.ResourceExhausted, Code.Unavailable, Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.AlreadyExists]);
/** Codes after which the node may have started the sandbox anyway: clean up before moving on. */
export const MAYBE_DONE = new Set([Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.Unavailable, Code.Canceled, Code.Aborted]);

/** Candidates with `nodeId` moved first when it is one of them (a resume restores in place from that node's cache). */
export function preferNode(candidates: readonly Candidate[], nodeId: string | null): string[] {
  const ids = candidates.map((c) => c.nodeId);
  if (!nodeId || !ids.includes(nodeId)) return ids;
  return [nodeId, ...ids.filter((id) => id !== nodeId)];
}

export interface StartWhat {
  /** What a failure names, e.g. `sandbox "i…" could not be resumed` or `template 'x'`. */
  describe: string;
  /** For a NOT_FOUND from every node of a fresh create: the template reference the caller gave. */
  templateRef?: string;
  /** Runs before the Create on each node (a resume makes sure its snapshot is committed before leaving its node). */
  before?: (nodeId: string) => Promise<void>;
}

/**
 * Create on the first node that takes it. NOT_FOUND means an unknown template or snapshot on that node (or a
 * node the edge no longer knows), so the others are tried; from every node it is a missing template or snapshot.
 * DATA_LOSS is a corrupt snapshot, the same on every node. A node that could not restore a snapshot's processes
 * (`snapshot_restore_failed`) may be the only one that cannot: the next is tried, and when none could, that is the
 * answer.
 */
export async function startOnNodes(
  link: ControlLink,
  nodeIds: readonly string[],
  spec: SandboxSpecInit,
  trafficAccessToken: string | null,
  what: StartWhat,
  log: Logger,
): Promise<{ nodeId: string; info: SandboxInfo }> {
  if (nodeIds.length === 0) throw new NoCapacity();
  let lastError: LinkCallError | undefined;
  let allExhausted = true;
  let allNotFound = true;
  // Snapshots live in cluster storage, shared by every node: one node's NOT_FOUND is everyone's, as long as no
  // other node failed for another reason than being full or draining.
  let notFoundOrFull = true;
  let anyNotFound = false;
  let restoreFailed: LinkCallError | undefined;
  for (const nodeId of nodeIds) {
    try {
      await what.before?.(nodeId);
      return { nodeId, info: await link.create(nodeId, spec, trafficAccessToken) };
    } catch (err) {
      if (!(err instanceof LinkCallError)) throw err;
      // The list that sent us here may be out of date (the node filled up, drains, left): the next placement asks.
      link.forgetNodeList();
      if (err.code === Code.DataLoss && spec.snapshotId) {
        throw new SnapshotCorrupt(spec.snapshotId, what.describe, err.detail);
      }
      if (err.nodeCode === NODE_RESTORE_FAILED && spec.snapshotId) {
        log.warn({ nodeId, err: err.message }, 'the node could not restore the snapshot, trying the next one');
        restoreFailed = err;
        allExhausted = allNotFound = notFoundOrFull = false;
        // Not deleted there: the node answered that it started nothing, and on the pause's own node a delete could
        // take what the snapshot still needs.
        continue;
      }
      if (!TRY_NEXT.has(err.code)) throw new ClusterUnavailable(`the cluster refused to start the sandbox (${what.describe})`, { cause: err });
      log.warn({ nodeId, err: err.message }, 'create failed on node, trying the next one');
      if (err.code !== Code.ResourceExhausted) allExhausted = false;
      if (err.code !== Code.NotFound) allNotFound = false;
      if (err.code === Code.NotFound) anyNotFound = true;
      else if (err.code !== Code.ResourceExhausted) notFoundOrFull = false;
      lastError = err;
      if (MAYBE_DONE.has(err.code)) {
        await link.delete(nodeId, spec.sandboxId, 'create failed').catch(() => undefined);
      }
    }
  }
  if (restoreFailed && spec.snapshotId) throw new SnapshotRestoreFailed(spec.snapshotId, what.describe, restoreFailed.detail);
  if (allExhausted) throw new NoCapacity();
  if (spec.snapshotId && anyNotFound && notFoundOrFull) throw new SnapshotMissing(spec.snapshotId, what.describe);
  if (allNotFound) {
    if (spec.snapshotId) throw new SnapshotMissing(spec.snapshotId, what.describe);
    throw new NotFound(`template '${what.templateRef ?? spec.templateId}' is not available in this cluster`);
  }
  throw new ClusterUnavailable('no node could start the sandbox', { cause: lastError });
}
