// The node's builds: accepts them (validated), runs at most `concurrency` at once beside the sandboxes, keeps
// state and logs in memory, and answers BuildStatus from memory or, for builds this node does not hold (a
// restart, another node's build), from storage: logs.jsonl plus the manifest (present = READY).

import { mkdir } from 'node:fs/promises';
import type { BlobStore } from '@cove/storage';
import { BlobNotFound } from '@cove/storage';
import type { Logger } from 'pino';
import type { LayerCache } from '../templates/layer-cache.js';
import { manifestKey, readManifest, type BuildManifest } from '../templates/manifest.js';
import { BuildStepFailed } from './build-errors.js';
import { BuildEngine, type ImageBaseResolver } from './build-engine.js';
import { BuildLog, logsKey, parseLogs, type LogEntry } from './build-log.js';
import type { BuildRuntime } from './build-sandbox.js';
import { validateBuildRequest, type BuildLimits, type ValidatedBuild } from './validate-request.js';
import type { BuildRequest } from '@cove/contracts/orchestrator';

export type BuildStateName = 'building' | 'ready' | 'error';

export interface BuildStatusView {
  state: BuildStateName;
  entries: LogEntry[];
  total: number;
  failure?: { message: string; step: string };
  manifest?: BuildManifest;
}

/** Why a call was refused; the RPC boundary maps each to a Connect code. */
export class BuildRefused extends Error {
  constructor(
    readonly reason: 'exists' | 'not_found' | 'in_use' | 'draining',
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

interface Running {
  templateId: string;
  state: BuildStateName;
  log: BuildLog;
  failure?: { message: string; step: string };
  manifest?: BuildManifest;
  abort: AbortController;
  done: Promise<void>;
}

export interface BuildManagerOptions {
  runtime: BuildRuntime;
  layers: LayerCache;
  store: BlobStore;
  workDir: string;
  images?: ImageBaseResolver;
  limits: BuildLimits;
  /** Builds running at once on this node (COVE_MAX_BUILDS); more wait their turn. */
  concurrency: number;
  /** True while the node drains: no new builds. */
  draining?: () => boolean;
  /** True while a sandbox on this node runs the build (DeleteBuilds refuses then). */
  buildInUse?: (buildId: string) => boolean;
  /** Every build log entry, with the build's ids (telemetry). */
  onLog?: (ids: BuildIds, entry: LogEntry) => void;
  /** A build ended (telemetry's build totals). */
  onFinished?: (outcome: 'ready' | 'error') => void;
  log: Logger;
}

export interface BuildIds {
  templateId: string;
  buildId: string;
  teamId: string;
}

const PAGE_CAP = 100;
/** Finished builds stay in memory this long for fast status; storage has them afterwards. */
const KEEP_FINISHED_MS = 30 * 60_000;

export class BuildManager {
  private readonly builds = new Map<string, Running>();
  private active = 0;
  private readonly queue: (() => void)[] = [];
  private envdVersion: string | undefined;
  private closed = false;

  constructor(private readonly o: BuildManagerOptions) {}

  /** Builds accepted here and not finished (waiting for a slot included). */
  running(): number {
    let n = 0;
    for (const b of this.builds.values()) if (b.state === 'building') n++;
    return n;
  }

  /** Validates and starts a build in the background. */
  async start(req: BuildRequest): Promise<void> {
    const v = validateBuildRequest(req, this.o.limits);
    if (this.closed || this.o.draining?.()) throw new BuildRefused('draining', 'node is draining and accepts no new builds');
    if (this.builds.has(v.buildId)) throw new BuildRefused('exists', `build ${v.buildId} is already on this node`);
    if (await this.o.store.exists(manifestKey(v.buildId))) throw new BuildRefused('exists', `build ${v.buildId} is already finished`);
    if (this.builds.has(v.buildId)) throw new BuildRefused('exists', `build ${v.buildId} is already on this node`);
    const ids: BuildIds = { templateId: v.templateId, buildId: v.buildId, teamId: v.teamId };
    const onLog = this.o.onLog;
    const log = new BuildLog(this.o.store, v.buildId, this.o.log.child({ buildId: v.buildId }), onLog && ((e) => onLog(ids, e)));
    const abort = new AbortController();
    const b: Running = { templateId: v.templateId, state: 'building', log, abort, done: Promise.resolve() };
    this.builds.set(v.buildId, b);
    log.add('info', `build ${v.buildId} accepted by node`);
    b.done = this.execute(v, b);
  }

  private async slot(): Promise<() => void> {
    if (this.active >= this.o.concurrency) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    return () => {
      this.active--;
      this.queue.shift()?.();
    };
  }

  private async execute(v: ValidatedBuild, b: Running): Promise<void> {
    const log = this.o.log.child({ templateId: v.templateId, buildId: v.buildId, teamId: v.teamId });
    if (this.active >= this.o.concurrency) b.log.add('info', 'waiting for a free build slot on the node');
    const free = await this.slot();
    try {
      await mkdir(this.o.workDir, { recursive: true, mode: 0o700 });
      const engine = new BuildEngine(
        {
          runtime: this.o.runtime,
          layers: this.o.layers,
          store: this.o.store,
          workDir: this.o.workDir,
          images: this.o.images,
          log,
          knownEnvdVersion: () => this.envdVersion,
          rememberEnvdVersion: (x) => (this.envdVersion = x),
        },
        v,
        b.log,
        b.abort.signal,
      );
      b.manifest = await engine.run();
      b.state = 'ready';
      log.info('template build ready');
    } catch (err) {
      const step = err instanceof BuildStepFailed ? err.step : '';
      const message = err instanceof BuildStepFailed ? err.message : 'internal error while building';
      b.failure = { message, step };
      b.log.add('error', `build failed${step ? ` at step ${step}` : ''}: ${message}`, step);
      b.state = 'error';
      log.warn({ err, step }, 'template build failed');
    } finally {
      free();
      this.o.onFinished?.(b.state === 'ready' ? 'ready' : 'error');
      await b.log.close();
      setTimeout(() => {
        if (this.builds.get(v.buildId) === b) this.builds.delete(v.buildId);
      }, KEEP_FINISHED_MS).unref();
    }
  }

  /** Entries from `offset` (at most `limit`, capped at 100) and the state. NOT_FOUND when unknown here and in storage. */
  async status(templateId: string, buildId: string, offset: number, limit: number): Promise<BuildStatusView> {
    const n = Math.min(limit || PAGE_CAP, PAGE_CAP);
    const b = this.builds.get(buildId);
    if (b && b.templateId === templateId) {
      return { state: b.state, entries: b.log.entries.slice(offset, offset + n), total: b.log.entries.length, failure: b.failure, manifest: b.manifest };
    }
    let manifest: BuildManifest | null = null;
    try {
      manifest = await readManifest(this.o.store, buildId);
    } catch {
      manifest = null;
    }
    let entries: LogEntry[] | null = null;
    try {
      const body = await this.o.store.get(logsKey(buildId));
      const chunks: Buffer[] = [];
      for await (const c of body) chunks.push(c as Buffer);
      entries = parseLogs(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      if (!(err instanceof BlobNotFound)) throw err;
    }
    if (manifest && manifest.templateId !== templateId) throw new BuildRefused('not_found', `build ${buildId} is not a build of template ${templateId}`);
    if (!manifest && entries === null) throw new BuildRefused('not_found', `build ${buildId} is unknown`);
    const all = entries ?? [];
    if (manifest) return { state: 'ready', entries: all.slice(offset, offset + n), total: all.length, manifest };
    // Logs without a manifest and not running here: the build failed, or its node went away mid-build.
    const last = [...all].reverse().find((e) => e.level === 'error');
    return {
      state: 'error',
      entries: all.slice(offset, offset + n),
      total: all.length,
      failure: { message: last?.message ?? 'the build did not finish (its node stopped)', step: last?.step ?? '' },
    };
  }

  /**
   * Removes manifests and logs. Layers stay: they are content-addressed and shared (layer-cache entries of
   * every team's later builds, image layers, builds running on other nodes may reference them at any time),
   * so removing one safely needs a cluster-wide mark-and-sweep with a grace period, not a per-build delete.
   */
  async delete(templateId: string, buildIds: string[]): Promise<void> {
    for (const id of buildIds) {
      const b = this.builds.get(id);
      if (b && b.state === 'building') throw new BuildRefused('in_use', `build ${id} is still running`);
      if (this.o.buildInUse?.(id)) throw new BuildRefused('in_use', `a sandbox on this node runs build ${id}`);
    }
    for (const id of buildIds) {
      // A build that just finished may still be flushing its log to storage; deleting before that ends would
      // leave the log written back after the delete (a build neither listed nor gone).
      await this.builds.get(id)?.done.catch(() => undefined);
      const m = await readManifest(this.o.store, id).catch(() => null);
      if (m && m.templateId !== templateId) continue;
      await this.o.store.delete(manifestKey(id));
      await this.o.store.delete(logsKey(id));
      this.builds.delete(id);
    }
  }

  /** Aborts running builds and waits for them to end (their logs are flushed). */
  async close(): Promise<void> {
    this.closed = true;
    for (const b of this.builds.values()) b.abort.abort();
    await Promise.all([...this.builds.values()].map((b) => b.done));
  }
}
