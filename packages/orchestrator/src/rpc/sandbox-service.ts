// SandboxService handlers: translate between generated messages and the SandboxManager.

import { createHash } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt';
import type { ServiceImpl } from '@connectrpc/connect';
import { LINK_TRAFFIC_TOKEN_HEADER } from '@cove/contracts/link';
import {
  CreateResponseSchema,
  DeleteResponseSchema,
  DeleteSnapshotsResponseSchema,
  PauseResponseSchema,
  SnapshotCommit,
  SnapshotInfoSchema,
  SnapshotResponseSchema,
  type SnapshotInfo,
  ListResponseSchema,
  SandboxInfoSchema,
  UpdateNetworkResponseSchema,
  UpdateResponseSchema,
  type SandboxInfo,
  type SandboxService,
} from '@cove/contracts/orchestrator';
import { InvalidArgument } from '../errors.js';
import type { SandboxManager } from '../sandboxes/sandbox-manager.js';
import type { PauseResult, SnapshotCommit as Commit, SnapshotManager } from '../snapshots/snapshot-manager.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import { egressRulesOf, validateSandboxId, validateSpec, type NodeLimits } from '../sandboxes/validate-spec.js';

/** The contract's SnapshotCommit as the snapshot manager names it. */
const COMMITS: Partial<Record<SnapshotCommit, Commit>> = {
  [SnapshotCommit.NOW]: 'now',
  [SnapshotCommit.DEFERRED]: 'deferred',
  [SnapshotCommit.PENDING]: 'pending',
};

export function toSandboxInfo(r: SandboxRecord): SandboxInfo {
  return create(SandboxInfoSchema, {
    sandboxId: r.sandboxId,
    templateId: r.templateId,
    buildId: r.buildId,
    teamId: r.teamId,
    vcpu: r.vcpu,
    memoryMb: r.memoryMb,
    diskMb: r.diskMb,
    metadata: r.metadata,
    startTime: timestampFromMs(r.startTime),
    endTime: timestampFromMs(r.endTime),
    envdVersion: r.envdVersion,
    allowInternetAccess: r.allowInternetAccess,
    address: r.address,
  });
}

function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

function checkId(id: string): void {
  const v = validateSandboxId(id);
  if (v.length) throw new InvalidArgument(v);
}

function toSnapshotInfo(r: PauseResult): SnapshotInfo {
  const m = r.summary;
  return create(SnapshotInfoSchema, {
    snapshotId: m.snapshotId,
    sandboxId: m.sandboxId,
    memory: m.memory,
    sizeBytes: BigInt(m.sizeBytes),
    createdAt: timestampFromMs(Date.parse(m.createdAt)),
    pauseMs: r.pauseMs,
  });
}

export function sandboxService(
  manager: SandboxManager,
  node: NodeLimits,
  now: () => number = Date.now,
  snapshots?: SnapshotManager,
): ServiceImpl<typeof SandboxService> {
  return {
    async create(req, ctx) {
      // The control plane sends a private sandbox's traffic token as request metadata (the edge's control
      // link passes it through); only its hash is kept, for the edge's catalog via heartbeats.
      const trafficToken = ctx.requestHeader.get(LINK_TRAFFIC_TOKEN_HEADER) ?? '';
      const spec = validateSpec(req.sandbox, node, now(), trafficToken ? sha256Hex(trafficToken) : '');
      const { record, warmPoolHit } = await manager.create(spec);
      return create(CreateResponseSchema, { sandbox: toSandboxInfo(record), warmPoolHit });
    },
    list() {
      return create(ListResponseSchema, { sandboxes: manager.list().map(toSandboxInfo) });
    },
    async delete(req) {
      checkId(req.sandboxId);
      await manager.delete(req.sandboxId, req.reason || 'requested');
      return create(DeleteResponseSchema, {});
    },
    async update(req) {
      const v = validateSandboxId(req.sandboxId);
      if (!req.endTime) v.push('end_time: required');
      if (v.length) throw new InvalidArgument(v);
      const record = await manager.setEndTime(req.sandboxId, timestampMs(req.endTime!));
      return create(UpdateResponseSchema, { sandbox: toSandboxInfo(record) });
    },
    async updateNetwork(req) {
      const v = validateSandboxId(req.sandboxId);
      const egress = egressRulesOf(req.egress, v);
      if (v.length) throw new InvalidArgument(v);
      await manager.setNetwork(req.sandboxId, { allowInternetAccess: req.allowInternetAccess, egress });
      return create(UpdateNetworkResponseSchema, {});
    },
    async pause(req) {
      if (!snapshots) throw new InvalidArgument(['pause: this node has no cluster storage for snapshots']);
      const r = await snapshots.pause(req.sandboxId, req.snapshotId, req.memory);
      return create(PauseResponseSchema, { snapshot: toSnapshotInfo(r) });
    },
    async snapshot(req) {
      if (!snapshots) throw new InvalidArgument(['snapshot: this node has no cluster storage for snapshots']);
      const commit = COMMITS[req.commit];
      if (!commit) throw new InvalidArgument([`commit: unknown value ${req.commit}`]);
      const r = await snapshots.snapshot(req.sandboxId, req.snapshotId, commit);
      return create(SnapshotResponseSchema, { snapshot: toSnapshotInfo(r), sandbox: toSandboxInfo(r.record) });
    },
    async deleteSnapshots(req) {
      if (req.snapshotIds.length > 1000) throw new InvalidArgument(['snapshot_ids: at most 1000']);
      await snapshots?.delete(req.snapshotIds);
      return create(DeleteSnapshotsResponseSchema, {});
    },
  };
}
