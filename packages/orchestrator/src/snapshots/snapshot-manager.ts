// Pause, persistent snapshots and starts from a snapshot on this node (docs/pause-resume.md, "Orchestrator").
//
// A pause answers once the sandbox is stopped and its state is on this node's disk (dump + upper-dir export);
// a *commit job* then stores the artifacts and writes the manifest (the commit point for every other node),
// retrying until storage takes them. Until then the snapshot can be resumed here, in place; a Pause naming the
// same snapshot waits for the commit (the control plane calls it before resuming on another node), and so does
// DeleteSnapshots.
//
// Crash safety: before a pause touches the slot, the sandbox's record gets its intent (`pausing`). Before the
// processes are gone a failure puts the sandbox back, running. From the dump on, a pause only goes forward: the
// images and the slot's disk stay until the commit, and the next start of the node restarts the commit job of
// every intent it finds. So at every moment the sandbox is running, or its complete state is on this node's
// disk or in cluster storage.
//
// Cache: a paused slot (its disk and images) stays here after the commit, so a resume on this node restores
// in place without reading storage; at most `maxPausedSlots` are kept, the oldest go first (the snapshot stays
// in storage). Local files of snapshots whose manifest disappeared are swept.

import { access, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import { dumpCompleted } from '../checkpoint/criu.js';
import { CheckpointFailed, InvalidArgument, SandboxBusy, SnapshotCorrupt, SnapshotNotFound } from '../errors.js';
import type { SandboxRuntime, SlotInfo } from '../sandbox/runtime.js';
import type { InitDefaults, SandboxManager, SnapshotSlots } from '../sandboxes/sandbox-manager.js';
import type { SandboxRecord } from '../sandboxes/sandbox-record.js';
import type { SandboxStore } from '../sandboxes/sandbox-store.js';
import { bootBuildSlot } from '../sandboxes/build-pool.js';
import { validateSandboxId, type ValidSpec } from '../sandboxes/validate-spec.js';
import type { TemplateResolver } from '../templates/resolver.js';
import { fetchTarToDir, fetchToFile, storeDirTar, storeFile } from './snapshot-artifacts.js';
import { readSnapshotManifest, SNAPSHOT_ID_RE, snapshotManifestKey, writeSnapshotManifest, type SnapshotManifest } from './snapshot-manifest.js';
import { deleteUnreferenced } from './snapshot-gc.js';

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

export interface PauseResult {
  summary: SnapshotSummary;
  /** How long the sandbox's processes were stopped (0 for a repeated Pause). */
  pauseMs: number;
}

type Pausing = NonNullable<SandboxRecord['pausing']>;
/** What a resume in place needs of the paused sandbox: from its pause intent, or from the committed manifest. */
type PausedSandbox = Pick<SnapshotManifest, 'sandboxId' | 'templateId' | 'buildId' | 'vcpu' | 'memoryMb' | 'envVars' | 'envdVersion'>;
type StartedSlot = Awaited<ReturnType<SnapshotSlots['slotFor']>>;
type Intent = SandboxRecord & { pausing: Pausing };
/** What a start from a snapshot's local files needs: from the committed manifest, or from a pause intent. */
type SnapshotSource = Pick<SnapshotManifest, 'snapshotId' | 'templateId' | 'buildId' | 'diskMb' | 'initToken'>;

/** A pause whose snapshot is on this node's disk and not yet committed to cluster storage. */
interface CommitJob {
  intent: Intent;
  /** Settles once the manifest is in storage (or the snapshot was deleted first: rejects then). */
  committed: Promise<SnapshotManifest>;
  /** The sandbox was resumed in place meanwhile: its record is a running sandbox's again. */
  resumed: boolean;
  /** DeleteSnapshots came first: do not commit. */
  deleted: boolean;
  /** Ends a wait between attempts early (a delete need not sit out a retry delay). */
  wake?: () => void;
}

const summaryOf = (m: SnapshotManifest): SnapshotSummary => ({
  snapshotId: m.snapshotId,
  sandboxId: m.sandboxId,
  memory: m.memory !== null,
  sizeBytes: m.upper.size + (m.memory?.size ?? 0),
  createdAt: m.createdAt,
});

const artifactsOf = (m: SnapshotManifest): string[] => [m.upper.sha256, ...(m.memory ? [m.memory.sha256] : [])];

/** Before a commit starts (see runJob). */
const COMMIT_DELAY_MS = 300;
/** Waits between commit attempts: quick at first (a storage hiccup), then once a minute. */
const COMMIT_RETRY_MS = [1000, 2000, 5000, 10_000, 30_000, 60_000];
/**
 * How long a caller that needs the committed snapshot (a repeated Pause, a Create of another sandbox) waits for a
 * pending commit before it gets SandboxBusy: storage may be down for long, and callers must hear so in seconds.
 */
const COMMIT_WAIT_MS = 10_000;

export class SnapshotManager implements SnapshotSlots {
  /** snapshot id → slot id of paused slots kept in place, oldest first. */
  private readonly paused = new Map<string, string>();
  /** Commit jobs by snapshot id. */
  private readonly jobs = new Map<string, CommitJob>();
  private closed = false;
  /** Snapshot ids a pause or snapshot is working on right now (the sweep leaves their files alone). */
  private readonly active = new Set<string>();
  /** Starts reading a snapshot's local files right now, by snapshot id (the sweep leaves those alone). */
  private readonly inUse = new Map<string, number>();
  /** Artifact downloads in flight, by snapshot id. */
  private readonly fetches = new Map<string, Promise<void>>();
  private readonly log: Logger;

  constructor(private readonly o: SnapshotManagerOptions) {
    this.log = o.log;
  }

  dirOf(snapshotId: string): string {
    return join(this.o.dataDir, 'snapshots', snapshotId);
  }

  private imagesOf(snapshotId: string): string {
    return join(this.dirOf(snapshotId), 'images');
  }

  private upperOf(snapshotId: string): string {
    return join(this.dirOf(snapshotId), 'upper.tar');
  }

  private checkIds(sandboxId: string, snapshotId: string): void {
    const v = validateSandboxId(sandboxId);
    if (!SNAPSHOT_ID_RE.test(snapshotId)) v.push(`snapshot_id: must match ${SNAPSHOT_ID_RE.source}`);
    if (v.length) throw new InvalidArgument(v);
  }

  async pause(sandboxId: string, snapshotId: string, memory: boolean): Promise<PauseResult> {
    this.checkIds(sandboxId, snapshotId);
    const job = this.jobs.get(snapshotId);
    if (job) {
      // Idempotent, and the way to wait for the commit (before a resume on another node).
      if (job.intent.sandboxId !== sandboxId) throw new InvalidArgument([`snapshot_id: ${snapshotId} is another sandbox's`]);
      return { summary: summaryOf(await this.committed(job)), pauseMs: 0 };
    }
    const other = [...this.jobs.values()].find((j) => j.intent.sandboxId === sandboxId && !j.resumed);
    if (other) throw new SandboxBusy(sandboxId, `paused as snapshot ${other.intent.pausing.snapshotId}`);
    if (!this.o.manager.get(sandboxId) && !this.o.manager.isBusy(sandboxId)) {
      // The pause already happened and was committed (its answer may have been lost).
      const done = await readSnapshotManifest(this.o.blobs, snapshotId).catch(() => undefined);
      if (done && done.sandboxId === sandboxId) return { summary: summaryOf(done), pauseMs: 0 };
    }
    const record = this.o.manager.detach(sandboxId, 'being paused');
    const started = Date.now();
    const intent: Intent = { ...record, pausing: { snapshotId, memory, keepRunning: false } };
    this.active.add(snapshotId);
    try {
      let imageBytes: number;
      try {
        imageBytes = await this.stop(intent);
        // Exported now, while nothing runs in the slot: a resume in place may start writing again at once.
        await this.exportUpper(intent);
      } catch (err) {
        if (err instanceof CheckpointFailed) throw err;
        // The processes are gone: whatever is left is committed (the control plane's retry waits for it).
        this.hold(intent);
        throw err;
      }
      const pauseMs = Date.now() - started;
      const upperBytes = (await stat(this.upperOf(snapshotId))).size;
      const summary: SnapshotSummary = { snapshotId, sandboxId, memory: intent.pausing.memory, sizeBytes: upperBytes + imageBytes, createdAt: new Date().toISOString() };
      this.hold(intent);
      this.log.info({ sandboxId, snapshotId, memory, pauseMs, sizeBytes: summary.sizeBytes }, 'sandbox paused; committing its snapshot');
      return { summary, pauseMs };
    } finally {
      this.active.delete(snapshotId);
    }
  }

  /** The paused sandbox leaves the node (its slot stays as a cache) and its commit job starts. */
  private hold(intent: Intent): void {
    const { sandboxId, slotId } = intent;
    const { snapshotId, memory } = intent.pausing;
    if (memory) this.keepPausedSlot(snapshotId, slotId);
    this.o.manager.release(sandboxId);
    const job: CommitJob = { intent, resumed: false, deleted: false, committed: Promise.resolve(undefined as never) };
    job.committed = this.runJob(job);
    job.committed.catch(() => undefined);
    this.jobs.set(snapshotId, job);
  }

  private async runJob(job: CommitJob): Promise<SnapshotManifest> {
    const { sandboxId, slotId } = job.intent;
    const { snapshotId, memory } = job.intent.pausing;
    const log = this.log.child({ sandboxId, snapshotId });
    // A moment's grace: a sandbox resumed right away (here, in place) no longer needs this snapshot, and its
    // restore then does not compete with hashing and uploading it.
    await new Promise((r) => setTimeout(r, COMMIT_DELAY_MS).unref());
    for (let attempt = 0; ; attempt++) {
      const t0 = Date.now();
      try {
        if (job.deleted || job.resumed) throw new SnapshotNotFound(snapshotId);
        const manifest = await this.store(job.intent);
        if (job.deleted || job.resumed) {
          await deleteUnreferenced(this.o.blobs, artifactsOf(manifest), log);
          throw new SnapshotNotFound(snapshotId);
        }
        await writeSnapshotManifest(this.o.blobs, manifest);
        this.jobs.delete(snapshotId);
        // The intent record goes, unless a resume in place already made it a running sandbox's record again.
        if (!job.resumed && !this.o.manager.get(sandboxId)) {
          await this.o.store.remove(sandboxId).catch((err: unknown) => log.error({ err }, 'removing the paused sandbox\'s record failed'));
        }
        if (!memory) await this.o.runtime.destroy(slotId).catch((err: unknown) => log.error({ err, slotId }, 'destroying a paused slot failed'));
        log.info({ upperBytes: manifest.upper.size, memoryBytes: manifest.memory?.size ?? 0, commitMs: Date.now() - t0 }, 'snapshot committed');
        return manifest;
      } catch (err) {
        if (job.deleted || job.resumed || this.closed) {
          this.jobs.delete(snapshotId);
          if (job.resumed) log.info('the sandbox was resumed in place before its snapshot was committed; not committing it');
          throw err;
        }
        const wait = COMMIT_RETRY_MS[Math.min(attempt, COMMIT_RETRY_MS.length - 1)]!;
        log.warn({ err, attempt, retryInMs: wait }, 'committing the snapshot failed; retrying');
        await new Promise<void>((r) => {
          const t = setTimeout(r, wait).unref();
          job.wake = () => {
            clearTimeout(t);
            r();
          };
        });
        job.wake = undefined;
      }
    }
  }

  /** The job's manifest once committed; SandboxBusy when that takes longer than COMMIT_WAIT_MS. */
  private async committed(job: CommitJob): Promise<SnapshotManifest> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new SandboxBusy(job.intent.sandboxId, `paused; its snapshot ${job.intent.pausing.snapshotId} is not committed to cluster storage yet`)),
        COMMIT_WAIT_MS,
      ).unref();
    });
    try {
      return await Promise.race([job.committed, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async exportUpper(intent: Intent): Promise<void> {
    const upperFile = this.upperOf(intent.pausing.snapshotId);
    if (await exists(upperFile)) return;
    await this.o.runtime.exportUpper(intent.slotId, `${upperFile}.tmp`);
    await rename(`${upperFile}.tmp`, upperFile);
  }

  /**
   * Records the intent, then stops the sandbox's processes (a CRIU dump, or SIGKILL without memory); returns the
   * dump's bytes (0 without memory). A failure before the processes are gone puts the sandbox back, running, and
   * throws CheckpointFailed.
   */
  private async stop(intent: Intent): Promise<number> {
    const { sandboxId, slotId } = intent;
    const { snapshotId, memory } = intent.pausing;
    const dir = this.dirOf(snapshotId);
    try {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true, mode: 0o711 });
      // Everything the commit needs is taken now, while the slot surely exists (docs/pause-resume.md, "Invariant").
      if (memory) intent.pausing.initToken ??= await this.initTokenOf(slotId);
      await this.o.store.save(intent);
      if (memory) return (await this.o.runtime.checkpoint(slotId, this.imagesOf(snapshotId))).imageBytes;
      await this.o.runtime.halt(slotId);
      return 0;
    } catch (err) {
      if (await this.o.runtime.isAlive(slotId).catch(() => false)) {
        const { pausing: _, ...running } = intent;
        await this.o.store.save(running).catch((e: unknown) => this.log.error({ err: e, sandboxId }, 'clearing the pause intent failed'));
        this.o.manager.reattach(running);
        throw new CheckpointFailed(sandboxId, { cause: err });
      }
      // The processes are gone without a complete dump: only the filesystem can still be kept.
      this.log.error({ err, sandboxId, snapshotId }, 'the dump failed and the processes are gone; pausing the filesystem only');
      intent.pausing.memory = false;
      await this.o.store.save(intent).catch(() => undefined);
      throw err;
    }
  }

  /** Exports the writable layer (once) and puts both artifacts into cluster storage. */
  private async store(intent: Intent): Promise<SnapshotManifest> {
    const { snapshotId, memory } = intent.pausing;
    const upperFile = this.upperOf(snapshotId);
    await this.exportUpper(intent);
    const [upper, images] = await Promise.all([
      storeFile(this.o.blobs, upperFile),
      memory ? storeDirTar(this.o.blobs, this.imagesOf(snapshotId)) : Promise.resolve(null),
    ]);
    return {
      version: 1,
      snapshotId,
      sandboxId: intent.sandboxId,
      teamId: intent.teamId,
      templateId: intent.templateId,
      buildId: intent.buildId,
      vcpu: intent.vcpu,
      memoryMb: intent.memoryMb,
      diskMb: intent.diskMb,
      envVars: intent.envVars,
      upper,
      memory: images,
      initToken: memory ? (intent.pausing.initToken ?? (await this.initTokenOf(intent.slotId))) : '',
      envdVersion: intent.envdVersion,
      nodeId: this.o.nodeId,
      createdAt: new Date().toISOString(),
    };
  }

  private async initTokenOf(slotId: string): Promise<string> {
    const rec = (await this.o.runtime.listRecords()).find((r) => r.slotId === slotId);
    if (!rec) throw new Error(`slot ${slotId} has no record`);
    return rec.initToken;
  }

  /** A persistent snapshot: pause, then the sandbox runs on in place (restored right after the dump). */
  async snapshot(sandboxId: string, snapshotId: string): Promise<PauseResult & { record: SandboxRecord }> {
    this.checkIds(sandboxId, snapshotId);
    const record = this.o.manager.detach(sandboxId, 'being snapshotted');
    const started = Date.now();
    const intent = { ...record, pausing: { snapshotId, memory: true, keepRunning: true } };
    this.active.add(snapshotId);
    try {
      await this.stop(intent);
      let running: SandboxRecord;
      try {
        await this.exportUpper(intent);
      } finally {
        running = await this.restoreInPlace(intent);
      }
      const pauseMs = Date.now() - started;
      // A persistent snapshot must be usable from any node as soon as it is answered: committed first.
      const manifest = await this.store({ ...running, pausing: intent.pausing });
      await writeSnapshotManifest(this.o.blobs, manifest);
      this.log.info({ sandboxId, snapshotId, pauseMs }, 'snapshot taken');
      return { summary: summaryOf(manifest), pauseMs, record: running };
    } finally {
      this.active.delete(snapshotId);
    }
  }

  /** Restores a dumped sandbox into its own slot and puts it back on the routing table. */
  private async restoreInPlace(intent: Intent): Promise<SandboxRecord> {
    const { pid } = await this.o.runtime.restore(intent.slotId, this.imagesOf(intent.pausing.snapshotId));
    const { pausing: _, ...running } = { ...intent, pid };
    await this.o.store.save(running);
    this.o.manager.reattach(running);
    return running;
  }

  private keepPausedSlot(snapshotId: string, slotId: string): void {
    this.paused.set(snapshotId, slotId);
    // Only committed ones are a cache: the slot of a pause not yet in storage is part of its only copy.
    const evictable = [...this.paused.keys()].filter((id) => !this.jobs.has(id) && id !== snapshotId);
    while (this.paused.size > this.o.maxPausedSlots && evictable.length > 0) {
      const oldest = evictable.shift()!;
      const oldSlot = this.paused.get(oldest)!;
      this.paused.delete(oldest);
      void this.o.runtime.destroy(oldSlot).catch((err: unknown) => this.log.warn({ err, slotId: oldSlot }, 'dropping a cached paused slot failed'));
    }
  }

  /** SnapshotSlots: the slot a Create with snapshot_id runs in, restored or booted from the snapshot. */
  async slotFor(spec: ValidSpec, log: Logger): Promise<StartedSlot> {
    const job = this.jobs.get(spec.snapshotId);
    if (job && job.intent.sandboxId === spec.sandboxId) return this.startUncommitted(job, spec, log);
    // Anyone else needs the committed snapshot (bounded: a storage outage answers SandboxBusy in seconds).
    if (job) await this.committed(job);
    const m = await readSnapshotManifest(this.o.blobs, spec.snapshotId);
    const cold = spec.cold || m.memory === null;
    if (!cold) {
      const started = await this.resumeInPlace(spec, m, log, false);
      if (started) return started;
    }
    const init: InitDefaults = { ...(await this.defaultsOf(m)), envVars: { ...m.envVars, ...spec.envVars } };
    return this.usingFiles(m.snapshotId, async () => {
      await this.fetch(m, cold);
      return { slot: await this.startFromFiles(m, spec, cold, log), init };
    });
  }

  /**
   * The resume of a pause not committed yet: in place when possible, else into a new slot from this node's own
   * files of it — never waiting for storage. The paused slot, its files and the commit job stay until the snapshot
   * is committed or deleted (the control plane deletes it after a resume), so a failure here loses nothing and the
   * sandbox stays resumable.
   */
  private async startUncommitted(job: CommitJob, spec: ValidSpec, log: Logger): Promise<StartedSlot> {
    const { intent } = job;
    const { snapshotId, memory } = intent.pausing;
    const cold = spec.cold || !memory;
    if (!cold) {
      // Resumed before its commit finished: once it runs again the snapshot is stale, so the commit is dropped.
      const started = await this.resumeInPlace(spec, intent, log, true);
      if (started) {
        job.resumed = true;
        return started;
      }
    }
    const init: InitDefaults = { ...(await this.defaultsOf(intent)), envVars: { ...intent.envVars, ...spec.envVars } };
    const local: SnapshotSource = {
      snapshotId,
      templateId: intent.templateId,
      buildId: intent.buildId,
      diskMb: intent.diskMb,
      initToken: intent.pausing.initToken ?? '',
    };
    return this.usingFiles(snapshotId, async () => {
      await this.exportUpper(intent);
      return { slot: await this.startFromFiles(local, spec, cold, log), init };
    });
  }

  /** Runs `start` with the snapshot's local files protected from the sweep. */
  private async usingFiles<T>(snapshotId: string, start: () => Promise<T>): Promise<T> {
    this.inUse.set(snapshotId, (this.inUse.get(snapshotId) ?? 0) + 1);
    try {
      return await start();
    } finally {
      const n = (this.inUse.get(snapshotId) ?? 1) - 1;
      if (n > 0) this.inUse.set(snapshotId, n);
      else this.inUse.delete(snapshotId);
    }
  }

  /**
   * The sandbox's own paused slot restored in place, when this node keeps it and the Create is its resume;
   * undefined otherwise, or when the restore failed: an uncommitted pause's slot is kept then (`uncommitted`),
   * a committed one's is destroyed with the local files, so the caller starts from storage's verified copy.
   */
  private async resumeInPlace(spec: ValidSpec, was: PausedSandbox, log: Logger, uncommitted: boolean): Promise<StartedSlot | undefined> {
    const slotId = this.paused.get(spec.snapshotId);
    if (!slotId || spec.sandboxId !== was.sandboxId) return undefined;
    const init: InitDefaults = { ...(await this.defaultsOf(was)), envVars: { ...was.envVars, ...spec.envVars } };
    this.paused.delete(spec.snapshotId);
    try {
      await this.o.runtime.restore(slotId, this.imagesOf(spec.snapshotId));
      const slot = await this.o.runtime.slot(slotId);
      if (slot) return { slot, init, resumedInPlace: sameClaim(was, spec) ? was.envdVersion : undefined };
    } catch (err) {
      log.warn({ err, slotId, uncommitted }, 'restoring the paused slot in place failed; starting from the snapshot\'s files');
    }
    if (uncommitted) {
      this.paused.set(spec.snapshotId, slotId);
      return undefined;
    }
    await this.o.runtime.destroy(slotId).catch((err: unknown) => log.warn({ err, slotId }, 'destroying a paused slot failed'));
    await rm(this.dirOf(spec.snapshotId), { recursive: true, force: true });
    return undefined;
  }

  /** A new slot from the snapshot's local files (the caller made them present). */
  private async startFromFiles(m: SnapshotSource, spec: ValidSpec, cold: boolean, log: Logger): Promise<SlotInfo> {
    const opts = { diskMb: m.diskMb, limits: { vcpu: spec.vcpu, memoryMb: spec.memoryMb }, upperTar: this.upperOf(m.snapshotId) };
    if (cold) {
      // envd and the build's start command boot afresh on the snapshot's files.
      if (!m.buildId) return this.o.runtime.boot({ templateId: m.templateId, ...opts });
      return bootBuildSlot({ runtime: this.o.runtime, resolver: this.o.resolver, readyTimeoutMs: this.o.readyTimeoutMs, log }, m.templateId, m.buildId, opts);
    }
    const build = m.buildId ? await this.o.resolver.resolve(m.templateId, m.buildId) : undefined;
    try {
      return await this.o.runtime.restoreSnapshot({
        templateId: m.templateId,
        ...(build ? { layers: build.layers } : {}),
        ...opts,
        imageDir: this.imagesOf(m.snapshotId),
        initToken: m.initToken,
      });
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'runtime_checkpoint_failed') throw err;
      throw new SnapshotCorrupt(m.snapshotId, `its processes could not be restored (${(err as Error).message})`, { cause: err });
    } finally {
      build?.release();
    }
  }

  private async defaultsOf(m: { templateId: string; buildId: string }): Promise<InitDefaults> {
    if (!m.buildId) return { envVars: {}, user: 'user', workdir: '/home/user' };
    const b = await this.o.resolver.manifest(m.templateId, m.buildId);
    return { envVars: {}, user: b.user, workdir: b.workdir };
  }

  /** Makes the snapshot's artifacts present in its local dir (one download per snapshot at a time). */
  private fetch(m: SnapshotManifest, cold: boolean): Promise<void> {
    const key = `${m.snapshotId}/${cold ? 'fs' : 'mem'}`;
    let p = this.fetches.get(key);
    if (!p) {
      p = this.download(m, cold).finally(() => this.fetches.delete(key));
      this.fetches.set(key, p);
    }
    return p;
  }

  private async download(m: SnapshotManifest, cold: boolean): Promise<void> {
    const dir = this.dirOf(m.snapshotId);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const upper = this.upperOf(m.snapshotId);
    if (!(await exists(upper))) {
      await fetchToFile(this.o.blobs, m.upper, upper, m.snapshotId);
    }
    const images = this.imagesOf(m.snapshotId);
    if (!cold && m.memory && !(await exists(join(images, 'cove-checkpoint.json')))) {
      const part = `${images}.part`;
      await rm(part, { recursive: true, force: true });
      try {
        await fetchTarToDir(this.o.blobs, m.memory, part, join(dir, 'images.tar.part'), m.snapshotId);
      } catch (err) {
        await rm(part, { recursive: true, force: true });
        throw err;
      }
      await rm(images, { recursive: true, force: true });
      await rename(part, images);
    }
  }

  /** Removes snapshots from storage (manifest, then artifacts nothing else references) and from this node. */
  async delete(snapshotIds: string[]): Promise<void> {
    for (const id of snapshotIds) {
      if (!SNAPSHOT_ID_RE.test(id)) continue;
      const job = this.jobs.get(id);
      if (job) {
        // Not committed yet: it never will be; one in the middle of its upload finishes first.
        job.deleted = true;
        job.wake?.();
        await job.committed.catch(() => undefined);
        // Unless it runs again (resumed in place, or into a new slot from these files): its record is a running one's.
        if (!job.resumed && !this.o.manager.get(job.intent.sandboxId)) {
          await this.o.store.remove(job.intent.sandboxId).catch(() => undefined);
        }
        // A paused slot without memory is no cache (nothing restores into it): it goes with its snapshot.
        if (!job.resumed && !job.intent.pausing.memory) {
          await this.o.runtime.destroy(job.intent.slotId).catch((err: unknown) => this.log.warn({ err }, 'destroying a paused slot failed'));
        }
      }
      const m = await readSnapshotManifest(this.o.blobs, id).catch((err: unknown) => {
        if (err instanceof SnapshotCorrupt) return null;
        return undefined;
      });
      await this.o.blobs.delete(snapshotManifestKey(id));
      if (m) await deleteUnreferenced(this.o.blobs, artifactsOf(m), this.log);
      await this.dropLocal(id);
      this.log.info({ snapshotId: id }, 'snapshot deleted');
    }
  }

  private async dropLocal(snapshotId: string): Promise<void> {
    const slot = this.paused.get(snapshotId);
    if (slot) {
      this.paused.delete(snapshotId);
      await this.o.runtime.destroy(slot).catch((err: unknown) => this.log.warn({ err, slotId: slot }, 'destroying a cached paused slot failed'));
    }
    await rm(this.dirOf(snapshotId), { recursive: true, force: true });
  }

  /**
   * After a restart: settles every sandbox record that carries a pause intent (see the file comment) and
   * re-registers paused slots kept in place. Returns the slot ids to keep. Call after the running sandboxes
   * were re-adopted, before orphan clean-up.
   */
  async recover(records: SandboxRecord[]): Promise<string[]> {
    const keep: string[] = [];
    for (const r of records) {
      if (!r.pausing) continue;
      const intent = r as SandboxRecord & { pausing: Pausing };
      const { snapshotId, memory } = intent.pausing;
      const log = this.log.child({ sandboxId: r.sandboxId, snapshotId });
      keep.push(r.slotId);
      // A criu that outlived the orchestrator finishes first; its log says whether the dump completed.
      const dumped = memory && (await dumpCompleted(this.imagesOf(snapshotId)));
      if (await this.o.runtime.isAlive(r.slotId).catch(() => false)) {
        // The dump never happened or failed (criu resumes the tree then): the sandbox simply runs on.
        const { pausing: _, ...running } = intent;
        await this.o.store.save(running);
        this.o.manager.adopt(running);
        log.info('an interrupted pause left the sandbox running');
        continue;
      }
      // The processes are gone without a complete dump: only the filesystem is left to keep.
      if (memory && !dumped) intent.pausing.memory = false;
      if (intent.pausing.keepRunning && dumped) {
        try {
          this.o.manager.holdBusy(r.sandboxId, 'being restored');
          await this.restoreInPlace(intent);
          log.info('an interrupted snapshot was rolled back; the sandbox runs');
          continue;
        } catch (err) {
          log.error({ err }, 'restoring after an interrupted snapshot failed; pausing the sandbox instead');
        }
      }
      intent.pausing.keepRunning = false;
      if (await this.o.blobs.exists(snapshotManifestKey(snapshotId)).catch(() => false)) {
        // Committed before the crash; only the record was left.
        await this.o.store.remove(r.sandboxId).catch(() => undefined);
        if (!intent.pausing.memory) await this.o.runtime.destroy(r.slotId).catch(() => undefined);
        else this.keepPausedSlot(snapshotId, r.slotId);
        log.info('a committed pause was tidied up');
        continue;
      }
      this.hold(intent);
      log.info('an interrupted pause goes on: its snapshot is being committed');
    }
    // Paused slots kept in place: dead slots whose checkpoint dir is one of our committed snapshots.
    for (const rec of await this.o.runtime.listRecords()) {
      const id = rec.checkpointDir?.match(/\/snapshots\/([a-z0-9-]+)\/images$/)?.[1];
      if (!id || rec.checkpointDir !== this.imagesOf(id) || keep.includes(rec.slotId)) continue;
      if (await this.o.runtime.isAlive(rec.slotId)) continue;
      if (!(await this.o.blobs.exists(snapshotManifestKey(id)).catch(() => false))) continue;
      this.keepPausedSlot(id, rec.slotId);
      keep.push(rec.slotId);
    }
    // Slots of committed pauses without memory were destroyed above; keeping their id is harmless.
    return keep;
  }

  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;

  startSweeping(intervalMs: number): void {
    this.sweeper ??= setInterval(() => {
      this.sweeping ??= this.sweep()
        .catch((err: unknown) => this.log.warn({ err }, 'snapshot sweep failed'))
        .finally(() => (this.sweeping = undefined));
    }, intervalMs).unref();
  }

  async stopSweeping(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    await this.sweeping;
  }

  /** Drops local copies and paused slots of snapshots whose manifest is gone (deleted through another node). */
  async sweep(): Promise<void> {
    const ids = await readdir(join(this.o.dataDir, 'snapshots')).catch(() => [] as string[]);
    const busy = (id: string): boolean =>
      !SNAPSHOT_ID_RE.test(id) || this.active.has(id) || this.jobs.has(id) || this.inUse.has(id) || this.paused.has(id);
    const kept: Array<{ id: string; mtimeMs: number }> = [];
    for (const id of ids) {
      if (busy(id)) continue;
      if (await this.o.blobs.exists(snapshotManifestKey(id)).catch(() => true)) {
        kept.push({ id, mtimeMs: (await stat(this.dirOf(id)).catch(() => null))?.mtimeMs ?? 0 });
        continue;
      }
      await this.dropLocal(id);
      this.log.info({ snapshotId: id }, 'dropped the local copy of a deleted snapshot');
    }
    // Local copies of committed snapshots are only a cache (storage has them): the oldest beyond the bound go.
    kept.sort((a, b) => b.mtimeMs - a.mtimeMs);
    for (const { id } of kept.slice(this.o.maxLocalSnapshots)) {
      if (busy(id)) continue;
      await rm(this.dirOf(id), { recursive: true, force: true });
      this.log.info({ snapshotId: id }, 'dropped the local copy of a snapshot (cache bound)');
    }
  }
}

/**
 * Whether a resume in place may skip the claim and envd's /init: the slot still holds this sandbox's claim (its
 * hostname, limits and egress), and its restored envd its token and env — as long as nothing asked for changes.
 */
function sameClaim(was: { vcpu: number; memoryMb: number; envVars: Record<string, string> }, spec: ValidSpec): boolean {
  return was.vcpu === spec.vcpu && was.memoryMb === spec.memoryMb && Object.keys(spec.envVars).length === 0;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}
