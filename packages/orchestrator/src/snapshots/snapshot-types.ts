// What the parts of the snapshot machinery share (snapshot-manager.ts wires them): options, the shapes of a
// pause intent and of what starts a slot, and small helpers.

import { access } from 'node:fs/promises';
import type { BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { BootPermits } from '../sandboxes/boot-permits.js';
import type { SandboxManager, SnapshotSlots } from '../sandboxes/sandbox-manager.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import type { SandboxStore } from '../sandboxes/sandbox-store.js';
import type { ValidSpec } from '../sandboxes/validate-spec.js';
import type { TemplateResolver } from '../templates/resolver.js';
import type { SnapshotManifest } from './snapshot-manifest.js';

export interface SnapshotManagerOptions {
  dataDir: string;
  nodeId: string;
  runtime: SandboxRuntime;
  manager: SandboxManager;
  store: SandboxStore;
  blobs: BlobStore;
  resolver: TemplateResolver;
  readyTimeoutMs: number;
  maxPausedSlots: number;
  /** Local copies of committed snapshots (not paused slots) kept for quick starts on this node. */
  maxLocalSnapshots: number;
  /**
   * The node's bound on boots at once (boot-permits.ts). A restore into a new slot builds that slot as a boot
   * does (disk, mounts, network, crun) and waits its turn among the Creates; a resume in place does not.
   */
  permits?: BootPermits;
  log: Logger;
}

/** What a Pause or Snapshot answers about the snapshot. */
export interface SnapshotSummary {
  snapshotId: string;
  sandboxId: string;
  memory: boolean;
  sizeBytes: number;
  createdAt: string;
}

/** When a Snapshot reaches cluster storage (the contract's SnapshotCommit). */
export type SnapshotCommit = 'now' | 'deferred' | 'pending';

export interface PauseResult {
  summary: SnapshotSummary;
  /** How long the sandbox's processes were stopped (0 for a repeated Pause). */
  pauseMs: number;
}

export type Pausing = NonNullable<SandboxRecord['pausing']>;
/** A sandbox record carrying its pause intent (docs/pause-resume.md, "Crash safety"). */
export type Intent = SandboxRecord & { pausing: Pausing };
/** What a resume in place needs of the paused sandbox: from its pause intent, or from the committed manifest. */
export type PausedSandbox = Pick<SnapshotManifest, 'sandboxId' | 'templateId' | 'buildId' | 'vcpu' | 'memoryMb' | 'envVars' | 'envdVersion'>;
/** What a start from a snapshot's local files needs: from the committed manifest, or from a pause intent. */
export type SnapshotSource = Pick<SnapshotManifest, 'snapshotId' | 'templateId' | 'buildId' | 'diskMb' | 'initToken'>;
export type StartedSlot = Awaited<ReturnType<SnapshotSlots['slotFor']>>;

/** What a start from this node's files of a snapshot not (yet) committed needs, from its pause intent. */
export const sourceOfIntent = (intent: Intent): SnapshotSource => ({
  snapshotId: intent.pausing.snapshotId,
  templateId: intent.templateId,
  buildId: intent.buildId,
  diskMb: intent.diskMb,
  initToken: intent.pausing.initToken ?? '',
});

export const summaryOf = (m: SnapshotManifest): SnapshotSummary => ({
  snapshotId: m.snapshotId,
  sandboxId: m.sandboxId,
  memory: m.memory !== null,
  sizeBytes: m.upper.size + (m.memory?.size ?? 0),
  createdAt: m.createdAt,
});

/** Every artifact the manifest names: a snapshot's own, and the builds it shares with every snapshot that ran them. */
export const artifactsOf = (m: SnapshotManifest): string[] => [
  m.upper.sha256,
  ...(m.memory ? [m.memory.sha256] : []),
  ...(m.builds ? [m.builds.node.sha256, m.builds.init.sha256] : []),
];

/**
 * Whether a resume in place may skip the claim and envd's /init: the slot still holds this sandbox's claim (its
 * hostname, limits and egress), and its restored envd its token and env — as long as nothing asked for changes.
 */
export function sameClaim(was: { vcpu: number; memoryMb: number; envVars: Record<string, string> }, spec: ValidSpec): boolean {
  return was.vcpu === spec.vcpu && was.memoryMb === spec.memoryMb && Object.keys(spec.envVars).length === 0;
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}
