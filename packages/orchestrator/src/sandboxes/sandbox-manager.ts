// The node's sandboxes: create (warm claim or fresh boot, then envd /init), list, delete, move end times,
// and the capacity rules that decide whether a new sandbox fits. The in-memory map is the routing table
// of the node proxy; the SandboxStore mirrors it on disk for crash recovery.

import type { Logger } from 'pino';
import {
  EnvdInitFailed,
  NodeDraining,
  NodeFull,
  SandboxBusy,
  SandboxExists,
  SandboxNotFound,
  TemplateNotFound,
  TemplateNotReady,
  VolumesNotAvailable,
} from '../errors.js';
import { readyBuiltinSlot } from './template-start.js';
import type { SandboxRuntime, SlotInfo } from '../sandbox/runtime.js';
import type { EgressRules } from '../sandbox/slot-egress.js';
import type { BootPermits } from './boot-permits.js';
import { SANDBOX_CA_ENV } from '../sandbox/slot-trust-store.js';
import type { BuildManifest } from '../templates/manifest.js';
import type { TemplateResolver } from '../templates/resolver.js';
import { bootBuildSlot, type BuildPool } from './build-pool.js';
import { initEnvd, type EnvdInitReply } from './envd-init.js';
import { BUILTIN_USER, BUILTIN_WORKDIR } from '../code-interpreter.js';
import type { SandboxRecord } from './sandbox-record.js';
import type { SandboxStore } from './sandbox-store.js';
import { withTeam, type ValidSpec } from './validate-spec.js';
import type { WarmPool } from './warm-pool.js';

export interface Capacity {
  /** Creates that may wait for a boot permit at once (boot-permits.ts); one more is refused as NodeFull('boots'). */
  bootQueue: number;
  /** The longest a Create may expect to wait for a boot permit (at the node's recent boot time); longer: NodeFull('boots'). */
  bootWaitMs: number;
  cpuCount: number;
  memoryBytes: number;
  maxSandboxes: number;
  cpuOvercommit: number;
  memoryOvercommit: number;
}

export interface CreateResult {
  record: SandboxRecord;
  warmPoolHit: boolean;
}

export interface Allocation {
  count: number;
  vcpu: number;
  memoryMb: number;
  diskMb: number;
}

interface Reservation {
  vcpu: number;
  memoryMb: number;
  diskMb: number;
  /**
   * Settles when the Create that holds the reservation answers. A Delete of the id waits for it: a control plane
   * whose Create timed out deletes the id at once (create failed), and a Delete answered NOT_FOUND while the boot
   * went on left a sandbox nobody knew of running until its end time (seen at a saturated node: 7 of 9 failed creates).
   */
  settled?: Promise<unknown>;
}

export type NodeState = 'healthy' | 'draining';

/** What envd is initialised with besides the Create's own fields. */
export interface InitDefaults {
  envVars: Record<string, string>;
  user: string;
  workdir: string;
}

interface Started {
  slot: SlotInfo;
  init: InitDefaults;
  build?: BuildManifest | undefined;
  warmPoolHit: boolean;
  envdVersion: string;
  /** Where the sandbox's own logs begin in envd's ring (a new sandbox's; a resume goes on from its pause). */
  logsAfter?: number | undefined;
}

/**
 * A new sandbox's envd: its version, and its logs from its /init on. What the slot's envd recorded before (its start,
 * the pool's warm-up, a template's start command) was the slot's preparation, not the sandbox's life.
 */
function newSandboxEnvd(reply: EnvdInitReply): Pick<Started, 'envdVersion' | 'logsAfter'> {
  return { envdVersion: reply.version, logsAfter: reply.logSeq };
}

/** Where sandboxes started from a snapshot get their slot (src/snapshots). */
export interface SnapshotSlots {
  /**
   * A slot running the snapshot, and what envd was first initialised with. `resumedInPlace` (envd's version) says
   * the slot is the sandbox's own, restored with its claim and envd state intact: no claim or /init needed.
   */
  slotFor(spec: ValidSpec, log: Logger): Promise<{ slot: SlotInfo; init: InitDefaults; resumedInPlace?: string | undefined }>;
}

/** What sandboxes of user templates (template_id + build_id) need; without it such Creates are NOT_FOUND. */
export interface UserTemplates {
  resolver: TemplateResolver;
  pool: BuildPool;
  /** Bound on a build's ready command. */
  readyTimeoutMs: number;
}

/** What happened to a sandbox, for its logs (src/telemetry); called after the fact, never awaited. */
export interface SandboxLifecycle {
  created(record: SandboxRecord, how: { resumed: boolean; warmPoolHit: boolean }): void;
  deleted(record: SandboxRecord, reason: string): void;
  paused(record: SandboxRecord): void;
}

export class SandboxManager {
  private readonly sandboxes = new Map<string, SandboxRecord>();
  /** Records of detached sandboxes (pause, snapshot), for the lifecycle's `paused`. */
  private readonly detached = new Map<string, SandboxRecord>();
  private lifecycle: SandboxLifecycle | undefined;
  private readonly creating = new Map<string, Reservation>();
  private readonly deleting = new Set<string>();
  /** Sandboxes taken off the routing table for a pause or snapshot, with what is happening to them. */
  private readonly busy = new Map<string, string>();
  private snapshotSlots: SnapshotSlots | undefined;
  /** Build ids of Creates in flight (counted: several may run at once). */
  private readonly creatingBuilds = new Map<string, number>();
  private state: NodeState = 'healthy';
  private closed = false;

  constructor(
    private readonly runtime: SandboxRuntime,
    private readonly store: SandboxStore,
    private readonly pool: WarmPool,
    /** The node's bound on boots at once; a Create that misses the pools boots under it. */
    private readonly permits: BootPermits,
    private readonly capacity: Capacity,
    private readonly log: Logger,
    private readonly userTemplates?: UserTemplates,
  ) {}

  /** Set by the telemetry (app.ts). */
  onLifecycle(l: SandboxLifecycle): void {
    this.lifecycle = l;
  }

  private tell(fn: (l: SandboxLifecycle) => void): void {
    if (!this.lifecycle) return;
    try {
      fn(this.lifecycle);
    } catch (err) {
      this.log.warn({ err }, 'sandbox lifecycle listener failed');
    }
  }

  /** Set once the snapshot machinery exists (it needs the manager itself). */
  useSnapshots(s: SnapshotSlots): void {
    this.snapshotSlots = s;
  }

  get status(): NodeState {
    return this.state;
  }

  setStatus(status: NodeState): void {
    if (status !== this.state) this.log.info({ from: this.state, to: status }, 'node status changed');
    this.state = status;
  }

  /** Stop accepting Creates (shutdown). Running sandboxes are left alone. */
  close(): void {
    this.closed = true;
  }

  get(sandboxId: string): SandboxRecord | undefined {
    return this.sandboxes.get(sandboxId);
  }

  list(): SandboxRecord[] {
    return [...this.sandboxes.values()];
  }

  /** Whether a sandbox is off the routing table for a pause or snapshot (it still exists; its processes are frozen). */
  isDetached(sandboxId: string): boolean {
    return this.detached.has(sandboxId);
  }

  /** Sandboxes running plus those being created (they hold resources already). */
  allocation(): Allocation {
    const a: Allocation = { count: 0, vcpu: 0, memoryMb: 0, diskMb: 0 };
    for (const r of [...this.sandboxes.values(), ...this.creating.values()]) {
      a.count++;
      a.vcpu += r.vcpu;
      a.memoryMb += r.memoryMb;
      a.diskMb += r.diskMb;
    }
    return a;
  }

  /** Put a recovered sandbox back (crash recovery); it keeps its end time. */
  adopt(record: SandboxRecord): void {
    this.sandboxes.set(record.sandboxId, record);
  }

  async create(spec: ValidSpec): Promise<CreateResult> {
    const created = this.createOnce(spec);
    // createOnce reserved the id before its first await, unless it refused at once (then a reservation here is
    // another Create's, which keeps its own).
    const reservation = this.creating.get(spec.sandboxId);
    if (reservation && !reservation.settled) reservation.settled = created.catch(() => undefined);
    return created;
  }

  private async createOnce(spec: ValidSpec): Promise<CreateResult> {
    const { sandboxId } = spec;
    const log = this.log.child({ sandboxId, templateId: spec.templateId });
    // An id still being deleted counts as taken: its record file is removed at the end of the delete.
    if (this.sandboxes.has(sandboxId) || this.creating.has(sandboxId) || this.deleting.has(sandboxId) || this.busy.has(sandboxId)) {
      throw new SandboxExists(sandboxId);
    }
    if (this.state === 'draining' || this.closed) throw new NodeDraining();
    this.checkRoom(spec);
    // Reserve synchronously, before the first await, so concurrent Creates see each other.
    this.creating.set(sandboxId, { vcpu: spec.vcpu, memoryMb: spec.memoryMb, diskMb: spec.diskMb });
    if (spec.buildId) this.creatingBuilds.set(spec.buildId, (this.creatingBuilds.get(spec.buildId) ?? 0) + 1);
    let slot: SlotInfo | undefined;
    try {
      const started = spec.snapshotId ? await this.fromSnapshot(spec, log) : await this.fromTemplate(spec, log);
      slot = started.slot;
      const { init, build, warmPoolHit, envdVersion, logsAfter } = started;
      const record: SandboxRecord = {
        version: 1,
        sandboxId,
        templateId: spec.templateId,
        buildId: spec.buildId,
        teamId: spec.teamId,
        vcpu: spec.vcpu,
        memoryMb: spec.memoryMb,
        diskMb: spec.diskMb,
        metadata: spec.metadata,
        startTime: spec.startTime,
        endTime: spec.endTime,
        envdVersion,
        allowInternetAccess: spec.allowInternetAccess,
        egress: spec.egress,
        trafficTokenSha256: spec.trafficTokenSha256,
        maskRequestHost: spec.maskRequestHost,
        slotId: slot.slotId,
        address: slot.address,
        pid: slot.pid,
        envVars: init.envVars,
        ...(logsAfter !== undefined ? { logsAfter } : {}),
      };
      // Readable by the next process before the answer; fsynced just after it (SandboxStore.saveVisible).
      await this.store.saveVisible(record);
      this.sandboxes.set(sandboxId, record);
      // Only a build that started once is kept warm: a broken one must not boot in a loop.
      if (build) this.userTemplates!.pool.noteUse(build);
      log.info({ slotId: slot.slotId, address: slot.address, warmPoolHit, snapshotId: spec.snapshotId || undefined, endTime: new Date(spec.endTime).toISOString() }, 'sandbox created');
      this.tell((l) => l.created(record, { resumed: Boolean(spec.snapshotId), warmPoolHit }));
      return { record, warmPoolHit };
    } catch (err) {
      if (slot) await this.destroySlot(slot, log);
      throw err;
    } finally {
      this.creating.delete(sandboxId);
      if (spec.buildId) {
        const n = (this.creatingBuilds.get(spec.buildId) ?? 1) - 1;
        if (n <= 0) this.creatingBuilds.delete(spec.buildId);
        else this.creatingBuilds.set(spec.buildId, n);
      }
    }
  }

  async delete(sandboxId: string, reason: string): Promise<void> {
    await this.creating.get(sandboxId)?.settled;
    const what = this.busy.get(sandboxId);
    if (what) throw new SandboxBusy(sandboxId, what);
    const record = this.sandboxes.get(sandboxId);
    if (!record || this.deleting.has(sandboxId)) throw new SandboxNotFound(sandboxId);
    const log = this.log.child({ sandboxId, slotId: record.slotId });
    this.deleting.add(sandboxId);
    // Leave the routing table first, so the proxy answers "not found" while the slot is torn down.
    this.sandboxes.delete(sandboxId);
    try {
      await this.runtime.destroy(record.slotId);
      await this.store.remove(sandboxId);
      log.info({ reason }, 'sandbox deleted');
      this.tell((l) => l.deleted(record, reason));
    } catch (err) {
      // The record stays on disk, so the next start retries the clean-up.
      log.error({ err, reason }, 'destroying sandbox failed');
      throw err;
    } finally {
      this.deleting.delete(sandboxId);
    }
  }

  async setEndTime(sandboxId: string, endTime: number): Promise<SandboxRecord> {
    const what = this.busy.get(sandboxId);
    if (what) throw new SandboxBusy(sandboxId, what);
    const record = this.sandboxes.get(sandboxId);
    if (!record || this.deleting.has(sandboxId)) throw new SandboxNotFound(sandboxId);
    const updated = { ...record, endTime };
    await this.store.save(updated);
    // A Delete may have raced the write; do not resurrect it.
    if (this.sandboxes.get(sandboxId) === record) this.sandboxes.set(sandboxId, updated);
    this.log.info({ sandboxId, endTime: new Date(endTime).toISOString() }, 'sandbox end time updated');
    return updated;
  }

  /**
   * Replaces a running sandbox's egress live (runtime.setNetwork); on failure the previous policy stays in force
   * and in the record. Refused while a pause or snapshot holds the sandbox (its slot is being checkpointed).
   */
  async setNetwork(sandboxId: string, net: { allowInternetAccess: boolean; egress: EgressRules }): Promise<SandboxRecord> {
    const what = this.busy.get(sandboxId);
    if (what) throw new SandboxBusy(sandboxId, what);
    const record = this.sandboxes.get(sandboxId);
    if (!record || this.deleting.has(sandboxId)) throw new SandboxNotFound(sandboxId);
    // The sandbox's own team: the only one whose secrets its rules can name.
    net = { ...net, egress: withTeam(net.egress, record.teamId) };
    await this.runtime.setNetwork(record.slotId, net);
    const updated = { ...record, allowInternetAccess: net.allowInternetAccess, egress: net.egress };
    await this.store.save(updated);
    if (this.sandboxes.get(sandboxId) === record) this.sandboxes.set(sandboxId, updated);
    this.log.info({ sandboxId, allowInternetAccess: net.allowInternetAccess, allowOut: net.egress.allowOut.length, denyOut: net.egress.denyOut.length }, 'sandbox network updated');
    return updated;
  }

  /**
   * Takes a sandbox off the routing table for a pause or snapshot (`what` says which, for errors): Create,
   * Delete and Update of it are refused until reattach() or release().
   */
  detach(sandboxId: string, what: string): SandboxRecord {
    const busy = this.busy.get(sandboxId);
    if (busy) throw new SandboxBusy(sandboxId, busy);
    const record = this.sandboxes.get(sandboxId);
    if (!record || this.deleting.has(sandboxId)) throw new SandboxNotFound(sandboxId);
    this.busy.set(sandboxId, what);
    this.sandboxes.delete(sandboxId);
    this.detached.set(sandboxId, record);
    return record;
  }

  /** Puts a detached sandbox back (it runs again). */
  reattach(record: SandboxRecord): void {
    this.busy.delete(record.sandboxId);
    this.detached.delete(record.sandboxId);
    this.sandboxes.set(record.sandboxId, record);
  }

  /** Forgets a detached sandbox (it is paused: no longer on this node). */
  release(sandboxId: string): void {
    this.busy.delete(sandboxId);
    const record = this.detached.get(sandboxId);
    this.detached.delete(sandboxId);
    if (record) this.tell((l) => l.paused(record));
  }

  /** Marks a recovered sandbox whose pause is unfinished as busy (a Pause naming its snapshot finishes it). */
  holdBusy(sandboxId: string, what: string): void {
    this.busy.set(sandboxId, what);
  }

  isBusy(sandboxId: string): boolean {
    return this.busy.has(sandboxId);
  }

  /** Sandboxes whose end time has passed (checked by the expiry scanner). */
  expired(now: number): string[] {
    const out: string[] = [];
    for (const r of this.sandboxes.values()) if (r.endTime <= now && !this.deleting.has(r.sandboxId)) out.push(r.sandboxId);
    return out;
  }

  /** True while a sandbox on this node runs (or is being created from) the build: DeleteBuilds must wait. */
  buildInUse(buildId: string): boolean {
    if (this.creatingBuilds.has(buildId)) return true;
    for (const r of this.sandboxes.values()) if (r.buildId === buildId) return true;
    return false;
  }

  /** A claimed, initialised slot from the template: a warm one when there is one, else a fresh boot. */
  private async fromTemplate(spec: ValidSpec, log: Logger): Promise<Started> {
    // A build id names a user template (its manifest, NOT_FOUND when unknown); none, a built-in one.
    const build = spec.buildId ? await this.manifestOf(spec) : undefined;
    if (!build && !(await this.runtime.hasTemplate(spec.templateId))) {
      // A template the node still builds (or failed to) is answered at once, not waited for: another node may have it.
      const status = await this.runtime.templateStatus(spec.templateId);
      if (status === 'building' || status === 'failed') throw new TemplateNotReady(spec.templateId, status);
      throw new TemplateNotFound(spec.templateId);
    }
    // A build's env is the sandbox's default; the Create's own variables win.
    // With rules, runtimes that ignore the system bundle (Node) are pointed at the sandbox's egress CA too.
    const caEnv = spec.egress.rules?.length ? SANDBOX_CA_ENV : {};
    const init: InitDefaults = { envVars: { ...caEnv, ...build?.env, ...spec.envVars }, user: build?.user ?? BUILTIN_USER, workdir: build?.workdir ?? BUILTIN_WORKDIR };
    // A warm slot's mounts were made before anyone asked: a sandbox with volumes always boots afresh.
    const takeWarm = (): SlotInfo | undefined =>
      spec.volumes.length > 0 ? undefined : build ? this.userTemplates!.pool.take(spec.buildId, spec.diskMb) : this.pool.take(spec.templateId, spec.diskMb);
    // A warm slot can die while it waits (OOM, a node hiccup); that is the pool's failure, not the caller's: its
    // Create falls back to a fresh boot once, whether the slot was taken at once or once its turn for a boot came.
    const fromWarm = async (slot: SlotInfo): Promise<Started | undefined> => {
      try {
        return { slot, init, build, warmPoolHit: true, ...newSandboxEnvd(await this.claimAndInit(slot, spec, log, init)) };
      } catch (err) {
        log.warn({ err, slotId: slot.slotId }, 'warm slot unusable, booting a fresh one');
        await this.destroySlot(slot, log);
        return undefined;
      }
    };
    const bootFresh = (): Promise<SlotInfo> => (build ? this.bootBuild(spec) : this.boot(spec));
    const warm = takeWarm();
    const hit = warm && (await fromWarm(warm));
    if (hit) return hit;
    // A fresh boot waits its turn among the node's boots; a pool slot that became ready meanwhile is taken instead.
    // Past a short queue the node says it is full: the control plane tries another node, or the caller gets a
    // retryable 503 at once instead of a create that waits behind dozens of boots.
    // The wait is bounded in time too: the same queue is seconds on an idle node and tens of seconds on a busy one.
    if (this.permits.exhausted) {
      if (this.permits.queued.create >= this.capacity.bootQueue) throw new NodeFull('boots');
      const waitMs = this.permits.expectedCreateWaitMs();
      if (waitMs !== undefined && waitMs > this.capacity.bootWaitMs) throw new NodeFull('boots', waitMs);
    }
    const turn = await this.permits.run('create', async (t) => {
      const late = warm ? undefined : takeWarm();
      if (late) t.untimed();
      return late ? { late } : { slot: await bootFresh() };
    });
    if (turn.late) {
      const lateHit = await fromWarm(turn.late);
      if (lateHit) return lateHit;
    }
    const slot = turn.slot ?? (await this.permits.run('create', bootFresh));
    return { slot, init, build, warmPoolHit: false, ...newSandboxEnvd(await this.initOrDestroy(slot, spec, log, init)) };
  }

  /** A claimed, initialised slot running a snapshot (a resume, or a new sandbox from a persistent one). */
  private async fromSnapshot(spec: ValidSpec, log: Logger): Promise<Started> {
    if (!this.snapshotSlots) throw new TemplateNotFound(`snapshot ${spec.snapshotId}`);
    const { slot, init, resumedInPlace } = await this.snapshotSlots.slotFor(spec, log);
    if (resumedInPlace !== undefined) return { slot, init, warmPoolHit: false, envdVersion: resumedInPlace };
    return { slot, init, warmPoolHit: false, envdVersion: (await this.initOrDestroy(slot, spec, log, init)).version };
  }

  private async initOrDestroy(slot: SlotInfo, spec: ValidSpec, log: Logger, init: InitDefaults): Promise<EnvdInitReply> {
    try {
      return await this.claimAndInit(slot, spec, log, init);
    } catch (err) {
      await this.destroySlot(slot, log);
      throw err;
    }
  }

  private async manifestOf(spec: ValidSpec): Promise<BuildManifest> {
    if (!this.userTemplates) throw new TemplateNotFound(`${spec.templateId} (build ${spec.buildId})`);
    return this.userTemplates.resolver.manifest(spec.templateId, spec.buildId);
  }

  /** A fresh slot of a user template: its layers, start command running, ready command passed. */
  private async bootBuild(spec: ValidSpec): Promise<SlotInfo> {
    const u = this.userTemplates!;
    try {
      return await bootBuildSlot(
        { runtime: this.runtime, resolver: u.resolver, readyTimeoutMs: u.readyTimeoutMs, log: this.log.child({ sandboxId: spec.sandboxId, buildId: spec.buildId }) },
        spec.templateId,
        spec.buildId,
        { diskMb: spec.diskMb, limits: { vcpu: spec.vcpu, memoryMb: spec.memoryMb }, ...(spec.volumes.length > 0 ? { volumes: spec.volumes } : {}) },
      );
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'runtime_address_pool_exhausted') throw new NodeFull('sandboxes');
      if (code === 'runtime_bad_layers') throw new TemplateNotFound(`${spec.templateId} (build ${spec.buildId}: ${(err as Error).message})`);
      if (code === 'runtime_volumes_unavailable') throw new VolumesNotAvailable();
      throw err;
    }
  }

  /**
   * Gives a booted slot the sandbox's limits and identity and /inits its envd, both at once (neither needs the
   * other: the claim works on the host side of the slot, /init in envd, and a failure of either destroys the
   * slot); returns envd's answer. Both are settled before anything is thrown, so nothing still runs against a
   * slot its caller is about to destroy.
   */
  private async claimAndInit(slot: SlotInfo, spec: ValidSpec, log: Logger, init: InitDefaults): Promise<EnvdInitReply> {
    log.debug({ slotId: slot.slotId }, 'claiming slot');
    // A failed claim stops /init's retries at once: a slot that died in the pool refuses connections until the
    // deadline, and the fresh boot that follows must not wait for it.
    const claimFailed = new AbortController();
    const [claimed, initialised] = await Promise.allSettled([
      this.runtime
        .claim(slot.slotId, {
          sandboxId: spec.sandboxId,
          limits: { vcpu: spec.vcpu, memoryMb: spec.memoryMb },
          allowInternetAccess: spec.allowInternetAccess,
          egress: spec.egress,
        })
        .catch((err: unknown) => {
          claimFailed.abort(err);
          throw err;
        }),
      initEnvd({
        address: slot.address,
        initToken: slot.initToken,
        body: {
          envVars: init.envVars,
          ...(spec.envdAccessToken ? { accessToken: spec.envdAccessToken } : {}),
          defaultUser: init.user,
          defaultWorkdir: init.workdir,
          hostname: spec.sandboxId,
          timestamp: new Date().toISOString(),
        },
        log,
        signal: claimFailed.signal,
      }),
    ]);
    if (claimed.status === 'rejected') throw claimed.reason;
    if (initialised.status === 'rejected') throw new EnvdInitFailed(spec.sandboxId, { cause: initialised.reason });
    return initialised.value;
  }

  private checkRoom(spec: ValidSpec): void {
    const a = this.allocation();
    const c = this.capacity;
    if (a.count + 1 > c.maxSandboxes) throw new NodeFull('sandboxes');
    if (a.vcpu + spec.vcpu > c.cpuCount * c.cpuOvercommit) throw new NodeFull('cpu');
    if ((a.memoryMb + spec.memoryMb) * 1024 * 1024 > c.memoryBytes * c.memoryOvercommit) throw new NodeFull('memory');
  }

  /** A fresh slot of a built-in template, its server (if it has one) started and ready. */
  private async boot(spec: ValidSpec): Promise<SlotInfo> {
    try {
      const slot = await this.runtime.boot({
        templateId: spec.templateId,
        diskMb: spec.diskMb,
        limits: { vcpu: spec.vcpu, memoryMb: spec.memoryMb },
        ...(spec.volumes.length > 0 ? { volumes: spec.volumes } : {}),
      });
      return await readyBuiltinSlot({ runtime: this.runtime, readyTimeoutMs: this.readyTimeoutMs, log: this.log.child({ sandboxId: spec.sandboxId }) }, slot, { warmUp: false });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'runtime_template_missing') throw new TemplateNotFound(spec.templateId);
      if (code === 'runtime_address_pool_exhausted') throw new NodeFull('sandboxes');
      if (code === 'runtime_volumes_unavailable') throw new VolumesNotAvailable();
      throw err;
    }
  }

  /** Bound on a start command's ready command (the user templates' setting; built-ins share it). */
  private get readyTimeoutMs(): number {
    return this.userTemplates?.readyTimeoutMs ?? 30_000;
  }

  private async destroySlot(slot: SlotInfo, log: Logger): Promise<void> {
    try {
      await this.runtime.destroy(slot.slotId);
    } catch (err) {
      log.error({ err, slotId: slot.slotId }, 'destroying slot of a failed create failed');
    }
  }
}
