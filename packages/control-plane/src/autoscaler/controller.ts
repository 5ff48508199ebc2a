// The autoscaler's loop body for one cluster: read the nodes, let the policy decide, act through the provider —
// scale out = launch; scale in = drain the chosen node with migration (node-drain.ts) and, only once the drain
// reports it empty, terminate it. A drain that could not empty its node puts the node back in service instead:
// a machine is never removed while anything of a sandbox depends on it.
//
// The cluster is reached through a `ScalingTarget`: in the control plane's process (inProcessTarget) or over its
// admin API (the CLI's `cove up --autoscale`, packages/cli/src/autoscale.ts) — one step, two ways in.

import { NodeStatus } from '@cove/contracts/orchestrator';
import type { ControlLinks } from '../cluster/control-link.js';
import type { NodeView } from '../cluster/placement.js';
import type { NodeDrains } from '../sandboxes/node-drain.js';
import type { Cluster } from '../store/cluster-store.js';
import { decide, type AutoscalerConfig, type Decision, type Demand, type NodeLoad, type ScalingHistory } from './policy.js';
import type { CapacityMisses } from './demand.js';
import type { NodeProvider } from './provider.js';

/** A node of the edge's list as the policy sees it. */
export function nodeLoadOf(n: NodeView): NodeLoad {
  const info = n.info;
  const edge = n.edgeStatus.toLowerCase();
  const status: NodeLoad['status'] =
    edge === 'draining' || info?.status === NodeStatus.DRAINING ? 'draining' : (edge === 'healthy' || edge === 'ready') && info?.status === NodeStatus.HEALTHY ? 'healthy' : 'unhealthy';
  return {
    nodeId: n.nodeId,
    status,
    cpuCount: info?.capacity?.cpuCount ?? 0,
    cpuAllocated: info?.usage?.cpuAllocated ?? 0,
    memoryBytes: Number(info?.capacity?.memoryBytes ?? 0n),
    memoryAllocatedBytes: Number(info?.usage?.memoryAllocatedBytes ?? 0n),
    sandboxCount: info?.sandboxCount ?? 0,
    warmPoolDepth: (info?.warmPools ?? []).reduce((s, w) => s + w.ready, 0),
    warmPoolTarget: (info?.warmPools ?? []).reduce((s, w) => s + w.target, 0),
  };
}

/** What a scale in needs to know of a node's drain (node-drain.ts `DrainView`). */
export interface DrainState {
  status: 'running' | 'done';
  empty: boolean | null;
  remaining: string[];
}

/** The cluster as the autoscaler acts on it. */
export interface ScalingTarget {
  nodes(): Promise<NodeLoad[]>;
  /** Starts draining the node with migration (idempotent while it runs). */
  drain(nodeId: string, timeoutMs: number): Promise<void>;
  /** The node's latest drain; undefined when none is known (e.g. the control plane restarted). */
  drainState(nodeId: string): Promise<DrainState | undefined>;
  undrain(nodeId: string): Promise<void>;
  /** Creates refused for lack of capacity in the control plane's recent window (demand.ts); used over `deps.demand`. */
  demand?(): Promise<Demand>;
}

/** The target inside the control plane's own process. */
export function inProcessTarget(cluster: Cluster, links: ControlLinks, drains: NodeDrains, misses?: CapacityMisses): ScalingTarget {
  return {
    ...(misses ? { demand: async () => misses.view(cluster.id) } : {}),
    nodes: async () => (await links.for(cluster).listNodes()).map(nodeLoadOf),
    drain: async (nodeId, timeoutMs) => {
      await drains.start(cluster, nodeId, { migrate: true, timeoutMs });
    },
    drainState: async (nodeId) => drains.get(cluster.id, nodeId),
    undrain: (nodeId) => drains.undrain(cluster, nodeId),
  };
}

export interface StepResult {
  decision: Decision;
  /** What was done about it (or about a scale in finishing). */
  did: string[];
}

/** One thing the autoscaler did, for its status and the operator. */
export interface ScalingEvent {
  at: number;
  action: 'launched' | 'draining' | 'terminated' | 'returned';
  nodeId: string;
  reason: string;
}

export interface AutoscalerDeps {
  target: ScalingTarget;
  provider: NodeProvider;
  config: AutoscalerConfig;
  /** Creates that failed or wait for lack of capacity, when the target does not report them; read once per step. */
  demand?: () => Demand;
  log: { info(obj: object, msg: string): void };
  /** How long a scale-in drain keeps retrying sandboxes. */
  drainTimeoutMs?: number;
  now?: () => number;
  /**
   * A scale in that was under way when this autoscaler started (its caller persisted `leaving`), so a restarted
   * autoscaler finishes it rather than waiting forever on a node that stays draining.
   */
  leaving?: string;
  /** Told whenever the node being scaled in changes (undefined once it left or returned), to persist it. */
  onLeaving?: (nodeId: string | undefined) => void;
}

export class Autoscaler {
  readonly history: ScalingHistory = {};
  /** The most recent events, oldest first (bounded). */
  readonly events: ScalingEvent[] = [];
  /** The node a scale in is draining, until it is terminated or returned to service. */
  private leaving: string | undefined;

  constructor(private readonly d: AutoscalerDeps) {
    this.leaving = d.leaving;
  }

  get leavingNode(): string | undefined {
    return this.leaving;
  }

  private event(e: ScalingEvent): void {
    this.events.push(e);
    if (this.events.length > 100) this.events.shift();
  }

  private setLeaving(nodeId: string | undefined): void {
    // Persisted first: a scale in that could not be recorded is not started (a restart would not know to finish
    // it, and its node would stay draining); a failed write fails the step before the drain.
    this.d.onLeaving?.(nodeId);
    this.leaving = nodeId;
  }

  async step(): Promise<StepResult> {
    const now = (this.d.now ?? Date.now)();
    const did: string[] = [];
    if (this.leaving && !(await this.d.provider.list()).some((n) => n.nodeId === this.leaving)) {
      // The provider no longer has it (removed by hand): nothing is left to finish.
      this.setLeaving(undefined);
    }
    if (this.leaving) {
      const nodeId = this.leaving;
      let v = await this.d.target.drainState(nodeId);
      // Known to nobody (a restarted control plane forgot it): start it again; it continues from the rows.
      if (!v) {
        await this.d.target.drain(nodeId, this.d.drainTimeoutMs ?? 600_000);
        v = await this.d.target.drainState(nodeId);
      }
      if (!v || v.status === 'running') return { decision: { action: 'none', reason: `node ${nodeId} is draining` }, did };
      if (v.empty) {
        await this.d.provider.terminate(nodeId);
        did.push(`terminated node ${nodeId} (drained, empty)`);
        this.event({ at: now, action: 'terminated', nodeId, reason: 'drained, empty' });
      } else {
        await this.d.target.undrain(nodeId);
        const why = v.remaining.join('; ') || 'no drain report';
        did.push(`node ${nodeId} could not be emptied (${why}); back in service`);
        this.event({ at: now, action: 'returned', nodeId, reason: why });
      }
      this.setLeaving(undefined);
      // The end of a scale in is this step's action; the next step decides on the cluster as it now is.
      this.d.log.info({ did }, 'autoscaler step');
      return { decision: { action: 'none', reason: `scale in of node ${nodeId} finished` }, did };
    }
    // A node the edge still lists with its last status (draining, then unhealthy, until it forgets it minutes
    // later) but the provider no longer runs has left: it is neither capacity, nor a scale in going on, nor a node
    // to scale in. A healthy node of no provider (joined by hand) is capacity.
    const owned = new Set((await this.d.provider.list()).map((n) => n.nodeId));
    const nodes = (await this.d.target.nodes()).filter((n) => n.status === 'healthy' || owned.has(n.nodeId));
    const demand = (await this.d.target.demand?.()) ?? this.d.demand?.() ?? { failedCreates: 0 };
    const decision = decide(this.d.config, nodes, demand, this.history, now);
    if (decision.action === 'scale_out') {
      const added = await this.d.provider.launch(decision.count);
      // Cooldowns count from when the nodes joined: a slow start must not eat the time they get to take load.
      const joined = (this.d.now ?? Date.now)();
      this.history.lastScaleOutAt = joined;
      did.push(`launched ${added.map((n) => n.nodeId).join(', ')}`);
      for (const n of added) this.event({ at: joined, action: 'launched', nodeId: n.nodeId, reason: decision.reason });
    } else if (decision.action === 'scale_in') {
      // Recorded before the drain starts: an autoscaler restarted in between resumes this scale in.
      this.setLeaving(decision.nodeId);
      await this.d.target.drain(decision.nodeId, this.d.drainTimeoutMs ?? 600_000);
      this.history.lastScaleInAt = now;
      did.push(`draining ${decision.nodeId}`);
      this.event({ at: now, action: 'draining', nodeId: decision.nodeId, reason: decision.reason });
    }
    if (did.length > 0) this.d.log.info({ decision, did }, 'autoscaler step');
    return { decision, did };
  }
}
