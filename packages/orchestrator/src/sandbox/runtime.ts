// The seam between the orchestrator's service layer (RPC, warm pool, timers,
// proxy) and the Linux sandbox runtime (namespaces, cgroups, seccomp, overlay,
// network). The service layer only ever talks to a sandbox through this.

import type { EgressRules } from './slot-egress.js';
import type { BuildKind, KeptBuild } from './lent-files.js';
import type { SlotRecord } from './slot-store.js';
import type { VolumeMountSpec } from './slot-volumes.js';

/** Resources a slot is bounded by. disk is fixed at boot; cpu and memory can change on claim. */
export interface SlotLimits {
  vcpu: number;
  memoryMb: number;
}

export interface BootOptions {
  /** Template id, e.g. 'base'; with `layers` only a label (kept in the slot record). */
  templateId: string;
  /**
   * Host directories stacked as the overlay's lower layers, top first, instead of the built-in template's
   * rootfs: the caller passes the complete stack (the built-in rootfs last when there is one). Each must be an
   * absolute path without ':', ',', '\\' or whitespace; the options naming them must fit in one page (about 80
   * layers at `<dataDir>/l/<16 hex>`, many more thanks to a relative fallback), else boot fails with
   * `runtime_bad_layers` before anything is made. The caller keeps the dirs alive until the slot is destroyed
   * (layersInUse() reports them from the slot records, also after a restart).
   */
  layers?: string[];
  /** Size of the writable layer; writes past it fail with ENOSPC inside. */
  diskMb: number;
  /** Limits while the slot waits in the warm pool (small). */
  limits: SlotLimits;
  /**
   * A warm-pool boot: the slot starts at a low CPU weight against the other slots (cgroups.ts CPU_SHARES) so
   * it does not slow the sandboxes already claimed; claim() gives it the normal weight before it is answered.
   */
  background?: boolean;
  /**
   * The slot's first service (argv inside the sandbox, run under tini as PID 1). Defaults to envd:
   * `/opt/cove/envd/envd-boot /opt/cove/bin/node ... /opt/cove/envd/envd-start.cjs`. It must answer HTTP GET /health on port 49983
   * (any 2xx) for boot to finish. Meant for tests and stand-ins while envd is not built.
   */
  process?: string[];
  /** A layer tar unpacked into the writable layer before boot (a snapshot's filesystem diff). */
  upperTar?: string;
  /** Team volumes to mount (slot-volumes.ts); such a slot is never pooled. */
  volumes?: VolumeMountSpec[];
}

/** A slot rebuilt from a snapshot: the stack it ran on, its filesystem diff, its CRIU image. */
export interface RestoreSnapshotOptions extends BootOptions {
  upperTar: string;
  /** CRIU image dir (checkpoint()'s output, possibly made on another node); kept, the caller removes it. */
  imageDir: string;
  /** The dumped envd's init secret (it lives in the restored process's environment). */
  initToken: string;
}

/** A booted sandbox slot: envd is listening, not yet initialised (no token). */
export interface SlotInfo {
  /** Runtime-internal id (container id, netns, cgroup are named after it). */
  slotId: string;
  templateId: string;
  diskMb: number;
  /** The sandbox's IPv4 address, routed by the node to its veth; envd is at http://<address>:49983. */
  address: string;
  /** Host pid of envd (the sandbox's first service; PID 2 inside, under tini). */
  pid: number;
  /** Secret envd requires on POST /init (X-Cove-Init-Token), so nothing inside can re-init it. */
  initToken: string;
  /** ISO time the slot was booted. */
  createdAt: string;
}

export interface ClaimOptions {
  /** Becomes the hostname (envd sets it during /init) and the routing key. */
  sandboxId: string;
  limits: SlotLimits;
  allowInternetAccess: boolean;
  /** Address rules on top of allowInternetAccess (slot-egress.ts); absent or empty = none. */
  egress?: EgressRules;
}

/** A running sandbox's network, replaced live by setNetwork. */
export interface SlotNetwork {
  allowInternetAccess: boolean;
  egress: EgressRules;
}

/** A built-in template on this node: startable, being built in the background, its build failed, or unknown. */
export type TemplateStatus = 'ready' | 'building' | 'failed' | 'absent';

export interface SandboxRuntime {
  /** Idempotent node set-up: gateway link, nftables table, cgroup parents, envd bundle, base template present. */
  prepare(): Promise<void>;
  /** Whether a template is available on this node. */
  hasTemplate(templateId: string): Promise<boolean>;
  /** Why a built-in template is or is not available (background builds: prepare() does not wait for them). */
  templateStatus(templateId: string): Promise<TemplateStatus>;
  /** Built-in templates a background build is queued or under way for (an older build may serve meanwhile). */
  buildingTemplates(): string[];
  /** Calls `listener` when a background build replaces a built-in template's older build (slots of it are stale). */
  onTemplateReplaced(listener: (templateId: string) => void): void;
  /** Resolves once the built-in template is available (at once when it is). */
  whenTemplateReady(templateId: string): Promise<void>;
  /** The built-in template's read-only rootfs (bottom layer of a stack on it), or null when absent. */
  builtinRootfs(templateId: string): Promise<string | null>;
  /** Boot a new slot and wait until envd answers /health. */
  boot(opts: BootOptions): Promise<SlotInfo>;
  /** Apply the claimed sandbox's limits and egress policy to a booted slot. */
  claim(slotId: string, opts: ClaimOptions): Promise<void>;
  /**
   * Replaces a claimed slot's egress live: the filter first, then the internet set, each one nft transaction, so
   * there is no moment with neither. On failure the slot keeps its previous filter (the record is written last).
   */
  setNetwork(slotId: string, net: SlotNetwork): Promise<void>;
  /** Kill a slot and remove everything it had: processes, mounts, cgroups, veth, netns, files. Idempotent. */
  destroy(slotId: string): Promise<void>;
  /**
   * Writes the slot's writable layer (overlay upper dir) as a layer tar (docs/template-builds.md "Layer
   * format") to `destFile`, without the runtime's own files (/etc/hostname, /etc/hosts, /etc/resolv.conf) and
   * the mount points crun makes (/proc, /dev, /sys, /opt/cove/bin/{node,tini}, /opt/cove/envd). Call it when
   * nothing writes in the slot any more (after the step's command exited), before destroy.
   */
  exportUpper(slotId: string, destFile: string): Promise<{ bytes: number; sha256: string }>;
  /**
   * Dumps the slot's whole process tree (tini, envd, everything under them: memory, open files,
   * listening and established TCP sockets) with CRIU into `imageDir` (created; its parent must exist, it
   * must not), after which the slot's processes are gone. Its disk (overlay, upper dir), cgroup,
   * address and record stay: the slot is not alive (isAlive false, not in listSlots, claim refuses it)
   * until restore() or destroy(). Throws CheckpointError (runtime_checkpoint_failed) when CRIU is not
   * installed or the dump fails (the slot then keeps running).
   */
  checkpoint(slotId: string, imageDir: string): Promise<{ ms: number; imageBytes: number }>;
  /** Kills every process of the slot and waits until they are gone; its disk and record stay (for exportUpper). */
  halt(slotId: string): Promise<void>;
  /**
   * Restores a checkpoint made by checkpoint() into the same slot on this node: same address (the host
   * plumbs a new netns for it), same overlay, same cgroup. Updates the slot's pid (the restored envd)
   * and returns once envd answers. The image dir is kept (the caller removes it). Throws
   * CheckpointError when the restore fails (the slot stays not alive; destroy() cleans it).
   * `lazy`: the tree was restored lazily and its memory still comes in behind it (linux-runtime.ts).
   */
  restore(slotId: string, imageDir: string): Promise<{ ms: number; pid: number; lazy?: boolean; steps?: Record<string, number> }>;
  /**
   * A new slot (new slot id, any free address) from a checkpoint made on this or another node: the stack in
   * `layers`, the writable layer unpacked from `upperTar`, the processes restored from `imageDir` into this
   * slot's cgroup and network; established TCP connections come back closed. Returns once envd answers, as
   * a pooled slot (claim it next). Throws CheckpointError when the restore fails (nothing is left behind).
   */
  restoreSnapshot(opts: RestoreSnapshotOptions): Promise<SlotInfo>;
  /**
   * The node and tini builds the checkpoint in `imageDir` (this node's dump) runs, as this node keeps them: a memory
   * snapshot carries them to cluster storage, so a node that never ran them can restore it. Null for one it does not keep.
   */
  checkpointBuildFiles(imageDir: string): Promise<Record<BuildKind, KeptBuild | null>>;
  /** The build of `kind` whose content's sha256 is `sha256`, when this node keeps it (a restore can map it); else null. */
  keptBuild(kind: BuildKind, sha256: string): Promise<KeptBuild | null>;
  /**
   * Keeps a build fetched from elsewhere for the restores that need it: `write(dest)` must leave at `dest` exactly
   * the bytes whose sha256 is `sha256` (a verified download).
   */
  adoptBuild(kind: BuildKind, sha256: string, write: (dest: string) => Promise<void>): Promise<KeptBuild>;
  /** Every layer dir a slot on this node stacks (from the slot records, so it survives restarts). */
  layersInUse(): Promise<Set<string>>;
  /** Every slot record on this node, alive or not (checkpointed slots keep theirs). */
  listRecords(): Promise<SlotRecord[]>;
  /** One slot's record, alive or not, or null: one file read, where listRecords reads every slot's. */
  record(slotId: string): Promise<SlotRecord | null>;
  /** One alive slot, or null. */
  slot(slotId: string): Promise<SlotInfo | null>;
  /** Slots that exist on this node right now (after an orchestrator crash: what survived). */
  listSlots(): Promise<SlotInfo[]>;
  /** Whether the slot's processes are still alive. */
  isAlive(slotId: string): Promise<boolean>;
  /** Resource usage of one slot (from its cgroup). */
  usage(slotId: string): Promise<{ cpuUsageNs: bigint; memoryBytes: number; pids: number; diskUsedBytes: number }>;
  /**
   * Removes leftovers (slot dirs, mounts, loop devices, crun containers, cgroups, veths, netns, nft
   * elements) of every slot not in `keep`. Returns the slot ids it cleaned. Call after a restart with the
   * slots the service layer decided to keep (e.g. the alive ones from listSlots()).
   */
  cleanupOrphans(keep: readonly string[]): Promise<string[]>;
}
