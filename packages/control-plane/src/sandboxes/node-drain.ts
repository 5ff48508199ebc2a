// Draining a node so it can leave the cluster (docs/operating.md, "Scaling and draining"): the node takes no new
// sandboxes, and with `migrate` every sandbox running on it moves to another node with its memory, processes and
// files — a pause with memory on this node, then a resume of the same sandbox id elsewhere (pause-resume.ts), so
// SDK handles keep working. The drain ends by saying whether the node is empty.
//
// Invariant (docs/decisions.md, "Drain with migration"): at every instant each sandbox of the node is either
// running (here or on its new node) or `pausing`/`paused` under the pause state machine, whose snapshot the node
// commits to cluster storage even across a crash of the node. Nothing here deletes a sandbox or a snapshot:
// a step that fails leaves the sandbox where the state machine put it, and the drain retries (or reports it).
//
// A sandbox is only paused once placement says another node can take it, so one that cannot move (no capacity,
// cannot be checkpointed) stays running and is reported. Jobs live in this process: a control plane restarted
// mid-drain loses the report, never a sandbox; running the drain again picks up where the rows stand.

import type { Logger } from 'pino';
import type { ControlLinks } from '../cluster/control-link.js';
import { placeOn, type PlacementOptions } from '../cluster/placement.js';
import { ClusterUnavailable, Conflict, CoveError, NoCapacity, OperationFailed, SandboxNotFound, TemplateNotReady } from '../errors.js';
import type { Cluster, ClusterStore } from '../store/cluster-store.js';
import type { SandboxRecord, SandboxStore } from '../store/sandbox-store.js';
import type { TeamStore } from '../store/team-store.js';
import type { SandboxService } from './sandbox-service.js';

/**
 * Where one sandbox stands. Final: `moved` (runs on `toNodeId`), `stuck` (still runs here: `reason`), `gone` (ended
 * or moved by someone else meanwhile), `paused` (the drain paused it but no node would resume it before the
 * deadline: its snapshot is committed and a connect resumes it). Not final: `pending`, `moving`, `in_doubt` (a
 * node did not answer; the reconciler settles the row and the drain tries again).
 */
export type MoveState = 'pending' | 'moving' | 'moved' | 'stuck' | 'gone' | 'paused' | 'in_doubt';

export interface SandboxMove {
  sandboxId: string;
  state: MoveState;
  toNodeId?: string;
  /** Why it did not move (yet), with the structured code of the error behind it. */
  reason?: string;
  errorCode?: string;
  migrateMs?: number;
}

export interface DrainView {
  clusterId: string;
  nodeId: string;
  migrate: boolean;
  /** `running` until every sandbox reached a final state (or the deadline passed), then `done`. */
  status: 'running' | 'done';
  startedAt: string;
  finishedAt: string | null;
  sandboxes: SandboxMove[];
  /**
   * Set when done: true when the node runs nothing and every sandbox paused on it has its snapshot committed to
   * cluster storage, i.e. the node can leave without losing anything.
   */
  empty: boolean | null;
  /** What keeps the node from being empty, in words. */
  remaining: string[];
}

export interface DrainOptions {
  migrate: boolean;
  /** How long the drain keeps retrying sandboxes that did not move yet. */
  timeoutMs: number;
}

export interface NodeDrainDeps {
  sandboxes: SandboxStore;
  clusters: ClusterStore;
  teams: TeamStore;
  links: ControlLinks;
  service: SandboxService;
  placement: PlacementOptions;
  log: Logger;
  /** Pause between rounds of retries (a sandbox in doubt waits for the reconciler). */
  retryIntervalMs?: number;
}

const FINAL: ReadonlySet<MoveState> = new Set(['moved', 'stuck', 'gone', 'paused']);
const MOVING_STATES: ReadonlySet<string> = new Set(['running', 'pausing', 'resuming', 'creating']);

interface Job {
  view: DrainView;
  /** Sandboxes this drain paused: they must run again (elsewhere), not stay paused. */
  pausedHere: Set<string>;
  done: Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const codeOf = (err: unknown) => (err instanceof CoveError ? (err.errorCode ?? err.code) : 'internal');
const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

export class NodeDrains {
  private readonly jobs = new Map<string, Job>();
  private closed = false;

  constructor(private readonly d: NodeDrainDeps) {}

  private key(clusterId: string, nodeId: string): string {
    return `${clusterId}\u0000${nodeId}`;
  }

  /** The drain of a node, running or finished (the last one); undefined when none ran in this process. */
  get(clusterId: string, nodeId: string): DrainView | undefined {
    return this.jobs.get(this.key(clusterId, nodeId))?.view;
  }

  /** Resolves when the drain of the node (if any) has finished; for tests and shutdown. */
  async settled(clusterId: string, nodeId: string): Promise<void> {
    await this.jobs.get(this.key(clusterId, nodeId))?.done;
  }

  /**
   * Marks the node draining (NotFound for a node the cluster does not know, ClusterUnavailable when it cannot be
   * reached: nothing else happened then) and starts moving its sandboxes in the background. A drain of the same
   * node already running is returned as it is (idempotent).
   */
  async start(cluster: Cluster, nodeId: string, opts: DrainOptions): Promise<{ view: DrainView; started: boolean }> {
    const k = this.key(cluster.id, nodeId);
    const running = this.jobs.get(k);
    if (running && running.view.status === 'running') return { view: running.view, started: false };
    await this.d.links.for(cluster).setNodeDraining(nodeId, true);
    const view: DrainView = {
      clusterId: cluster.id,
      nodeId,
      migrate: opts.migrate,
      status: 'running',
      startedAt: new Date().toISOString(),
      finishedAt: null,
      sandboxes: [],
      empty: null,
      remaining: [],
    };
    const job: Job = { view, pausedHere: new Set(), done: Promise.resolve() };
    const log = this.d.log.child({ clusterId: cluster.id, nodeId, drain: true });
    job.done = this.run(cluster, job, opts, log)
      .catch((err: unknown) => {
        log.error({ err }, 'drain failed');
        view.remaining.push(`the drain stopped: ${messageOf(err)}`);
      })
      .finally(() => {
        view.status = 'done';
        view.finishedAt = new Date().toISOString();
      });
    this.jobs.set(k, job);
    log.info({ migrate: opts.migrate }, 'node draining');
    return { view, started: true };
  }

  /** Returns the node to service. Conflict while a drain of it runs (it would re-mark the node draining). */
  async undrain(cluster: Cluster, nodeId: string): Promise<void> {
    if (this.jobs.get(this.key(cluster.id, nodeId))?.view.status === 'running') {
      throw new Conflict(`node "${nodeId}" is being drained; wait until the drain is done`);
    }
    await this.d.links.for(cluster).setNodeDraining(nodeId, false);
    this.d.log.info({ clusterId: cluster.id, nodeId }, 'node back in service');
  }

  /** Stops retrying (shutdown); moves in flight finish, and their sandboxes stay consistent either way. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.jobs.values()].map((j) => j.done));
  }

  private async run(cluster: Cluster, job: Job, opts: DrainOptions, log: Logger): Promise<void> {
    const { view } = job;
    const link = this.d.links.for(cluster);
    const deadline = Date.now() + opts.timeoutMs;
    const interval = this.d.retryIntervalMs ?? 1000;
    // Placement must stop offering the node before anything moves, or a resume could pick it again (the node
    // would refuse, but a clean first choice spares a round trip per sandbox).
    await this.untilEdgeSays(cluster, view.nodeId, Math.min(15_000, opts.timeoutMs));
    const moves = new Map<string, SandboxMove>();
    while (opts.migrate && !this.closed) {
      const rows = await this.d.sandboxes.onNode(cluster.id, view.nodeId);
      const todo = rows.filter((r) => {
        const m = moves.get(r.id);
        if (m && FINAL.has(m.state) && m.state !== 'paused') return false;
        return MOVING_STATES.has(r.state) || (r.state === 'paused' && job.pausedHere.has(r.id));
      });
      // Sandboxes this drain paused that were then resumed by someone else (a connect) are off the list above.
      if (todo.length === 0) break;
      for (const r of todo) {
        let m = moves.get(r.id);
        if (!m) {
          m = { sandboxId: r.id, state: 'pending' };
          moves.set(r.id, m);
          view.sandboxes.push(m);
        }
        if (this.closed) break;
        m.state = 'moving';
        const t0 = Date.now();
        const r2 = await this.move(cluster, job, r.id, log);
        Object.assign(m, { reason: undefined, errorCode: undefined }, r2, r2.state === 'moved' ? { migrateMs: Date.now() - t0 } : {});
      }
      const open = [...moves.values()].filter((m) => !FINAL.has(m.state) || (m.state === 'paused' && job.pausedHere.has(m.sandboxId)));
      if (open.length === 0 || Date.now() + interval > deadline) break;
      await sleep(interval);
    }
    // Past the deadline, a sandbox still in doubt stays in doubt in the report (its row is safe either way).
    await this.checkEmpty(cluster, job, log);
  }

  /** One attempt at moving sandbox `id` off the node. Never throws for a sandbox-level failure. */
  private async move(cluster: Cluster, job: Job, id: string, log: Logger): Promise<Omit<SandboxMove, 'sandboxId'>> {
    const nodeId = job.view.nodeId;
    // A create the node accepted before it was drained may still finish there: look again next round.
    if ((await this.d.sandboxes.get(id))?.state === 'creating') return { state: 'in_doubt', reason: 'still being created on the node', errorCode: 'conflict' };
    try {
      return await this.d.service.whenSettled(id, undefined, async (s) => {
        if (!s || s.clusterId !== cluster.id) return { state: 'gone' as const };
        if (s.state === 'paused' && job.pausedHere.has(id)) return this.resumeElsewhere(cluster, job, s, log);
        if (s.state !== 'running' || s.nodeId !== nodeId) return { state: 'gone' as const, ...(s.nodeId && s.nodeId !== nodeId ? { toNodeId: s.nodeId } : {}) };
        if (!(await this.reassertDraining(cluster, nodeId, log))) {
          return { state: 'in_doubt' as const, reason: 'the node is not confirmed draining yet; it keeps running here until it is', errorCode: 'cluster_unavailable' };
        }
        // Capacity first: a sandbox no other node can take is not paused at all; it runs on here.
        const link = this.d.links.for(cluster);
        const others = (await link.listNodes()).filter((n) => n.nodeId !== nodeId);
        const builtIn = (await this.d.service.pauses.nodeBuildId(s)) === '' ? { templateId: s.templateId, ref: s.templateId } : undefined;
        try {
          placeOn(others, s, this.d.placement, builtIn);
        } catch (err) {
          if (err instanceof NoCapacity || err instanceof TemplateNotReady) {
            return { state: 'stuck' as const, reason: `no other node can take it (${err.message}); it keeps running here`, errorCode: codeOf(err) };
          }
          throw err;
        }
        // Recorded before the pause: one left `pausing` by a node that died is settled to paused by the
        // reconciler later, and must then still be resumed by this drain.
        try {
          await this.d.service.refuseWithVolumes(id, 'moved');
        } catch (err) {
          return { state: 'stuck' as const, reason: (err as Error).message, errorCode: codeOf(err) };
        }
        job.pausedHere.add(id);
        try {
          await this.d.service.pauses.pause(s, true);
        } catch (err) {
          if (!(err instanceof ClusterUnavailable || err instanceof Conflict)) job.pausedHere.delete(id);
          if (err instanceof OperationFailed) {
            // A filesystem-only pause would lose its processes: a move must keep them, so it stays.
            return { state: 'stuck' as const, reason: `${err.message}`, errorCode: codeOf(err) };
          }
          if (err instanceof SandboxNotFound) return { state: 'gone' as const };
          if (err instanceof ClusterUnavailable || err instanceof Conflict) {
            return { state: 'in_doubt' as const, reason: `the pause did not complete (${err.message}); the reconciler settles it`, errorCode: codeOf(err) };
          }
          throw err;
        }
        const paused = await this.d.sandboxes.get(id);
        if (!paused || paused.state !== 'paused') return { state: 'gone' as const };
        return this.resumeElsewhere(cluster, job, paused, log);
      });
    } catch (err) {
      // whenSettled's Conflict: the row stayed pausing/resuming (e.g. the node is down); try again next round.
      if (err instanceof CoveError) return { state: 'in_doubt', reason: err.message, errorCode: codeOf(err) };
      throw err;
    }
  }

  /**
   * Marks the node draining again and waits (bounded) until the edge, which placement asks, no longer offers it:
   * a node restarted mid-drain comes back in service and must not take its sandboxes back. False when the edge
   * still calls it healthy.
   */
  private async reassertDraining(cluster: Cluster, nodeId: string, log: Logger): Promise<boolean> {
    await this.d.links
      .for(cluster)
      .setNodeDraining(nodeId, true)
      .catch((err: unknown) => log.warn({ err: messageOf(err) }, 'could not re-assert draining (the node may be down)'));
    return this.untilEdgeSays(cluster, nodeId, 15_000);
  }

  /** Resumes a sandbox the drain paused, keeping its end time; a failure leaves it paused (committed). */
  private async resumeElsewhere(cluster: Cluster, job: Job, s: SandboxRecord, log: Logger): Promise<Omit<SandboxMove, 'sandboxId'>> {
    const nodeId = job.view.nodeId;
    // The resume prefers the node that paused it (its cache): that must be a node the edge no longer offers.
    if (!(await this.reassertDraining(cluster, nodeId, log))) {
      return { state: 'paused', reason: 'paused; the drained node is not confirmed draining yet, so it is not resumed yet', errorCode: 'cluster_unavailable' };
    }
    const team = await this.d.teams.require(s.teamId);
    const seconds = Math.max(1, Math.ceil((s.endAt - Date.now()) / 1000));
    try {
      const r = await this.d.service.pauses.resume(team, s, seconds, false);
      job.pausedHere.delete(s.id);
      if (r.nodeId === nodeId) {
        // The node came back in service between the check and the Create: it runs there again, whole; the next
        // round moves it again.
        log.warn({ sandboxId: s.id }, 'sandbox resumed on the draining node itself; it is moved again');
        return { state: 'in_doubt', reason: 'resumed on the draining node (it restarted meanwhile); moved again next round', errorCode: 'conflict' };
      }
      log.info({ sandboxId: s.id, to: r.nodeId }, 'sandbox migrated');
      return { state: 'moved', toNodeId: r.nodeId! };
    } catch (err) {
      if (!(err instanceof CoveError)) throw err;
      log.warn({ sandboxId: s.id, err: err.message }, 'migrated sandbox could not be resumed yet; it stays paused');
      return { state: 'paused', reason: `paused, not resumed yet: ${err.message}`, errorCode: codeOf(err) };
    }
  }

  /**
   * Empty = the node lists no sandbox, no row says one runs or moves there, and every sandbox paused there has
   * its snapshot committed (a repeated Pause waits for the commit and answers only then).
   */
  private async checkEmpty(cluster: Cluster, job: Job, log: Logger): Promise<void> {
    const { view } = job;
    const link = this.d.links.for(cluster);
    const remaining: string[] = [];
    try {
      const listed = await link.list(view.nodeId);
      if (listed.length > 0) remaining.push(`the node runs ${listed.length} sandbox(es): ${listed.map((i) => i.sandboxId).join(', ')}`);
    } catch (err) {
      remaining.push(`the node did not list its sandboxes: ${messageOf(err)}`);
    }
    for (const r of await this.d.sandboxes.onNode(cluster.id, view.nodeId)) {
      if (MOVING_STATES.has(r.state)) {
        remaining.push(`sandbox ${r.id} is ${r.state} on the node`);
        continue;
      }
      if (r.state !== 'paused' || !r.pauseSnapshotId) continue;
      try {
        await link.pause(view.nodeId, r.id, r.pauseSnapshotId, r.pauseMemory ?? true);
      } catch (err) {
        remaining.push(`paused sandbox ${r.id}: its snapshot is not confirmed committed (${messageOf(err)})`);
      }
    }
    view.remaining.push(...remaining);
    view.empty = remaining.length === 0;
    log.info({ empty: view.empty, remaining }, 'drain done');
  }

  /**
   * Waits (bounded) until the edge no longer offers the node for placement (draining, unhealthy or gone); false
   * when it still does at the deadline.
   */
  private async untilEdgeSays(cluster: Cluster, nodeId: string, timeoutMs: number): Promise<boolean> {
    const link = this.d.links.for(cluster);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const nodes = await link.listNodes().catch(() => undefined);
      const n = nodes?.find((x) => x.nodeId === nodeId);
      if (nodes && (!n || (n.edgeStatus.toLowerCase() !== 'healthy' && n.edgeStatus.toLowerCase() !== 'ready'))) return true;
      if (Date.now() > deadline) return false;
      await sleep(200);
    }
  }
}
