// The autoscaler's loop body for one cluster: read the nodes, let the policy decide, act through the provider —
// scale out = launch; scale in = drain the chosen node with migration (node-drain.ts) and, only once the drain
// reports it empty, terminate it. A drain that could not empty its node puts the node back in service instead:
// a machine is never removed while anything of a sandbox depends on it.

import { NodeStatus } from '@cove/contracts/orchestrator';
import type { Logger } from 'pino';
import type { ControlLinks } from '../cluster/control-link.js';
import type { NodeView } from '../cluster/placement.js';
import type { NodeDrains } from '../sandboxes/node-drain.js';
import type { Cluster } from '../store/cluster-store.js';
import { decide, type AutoscalerConfig, type Decision, type Demand, type NodeLoad, type ScalingHistory } from './policy.js';
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

export interface StepResult {
  decision: Decision;
  /** What was done about it (or about a scale in finishing). */
  did: string[];
}

export interface AutoscalerDeps {
  cluster: Cluster;
  links: ControlLinks;
  drains: NodeDrains;
  provider: NodeProvider;
  config: AutoscalerConfig;
  /** Creates that failed or wait for lack of capacity; read (and reset by the caller) once per step. */
  demand: () => Demand;
  log: Logger;
  /** How long a scale-in drain keeps retrying sandboxes. */
  drainTimeoutMs?: number;
  now?: () => number;
}

export class Autoscaler {
  readonly history: ScalingHistory = {};
  /** The node a scale in is draining, until it is terminated or returned to service. */
  private leaving: string | undefined;

  constructor(private readonly d: AutoscalerDeps) {}

  async step(): Promise<StepResult> {
    const now = (this.d.now ?? Date.now)();
    const did: string[] = [];
    if (this.leaving) {
      const v = this.d.drains.get(this.d.cluster.id, this.leaving);
      if (v && v.status === 'running') return { decision: { action: 'none', reason: `node ${this.leaving} is draining` }, did };
      const nodeId = this.leaving;
      this.leaving = undefined;
      if (v?.empty) {
        await this.d.provider.terminate(nodeId);
        did.push(`terminated node ${nodeId} (drained, empty)`);
      } else {
        await this.d.drains.undrain(this.d.cluster, nodeId);
        did.push(`node ${nodeId} could not be emptied (${v?.remaining.join('; ') ?? 'no drain report'}); back in service`);
      }
      // The end of a scale in is this step's action; the next step decides on the cluster as it now is.
      this.d.log.info({ did }, 'autoscaler step');
      return { decision: { action: 'none', reason: `scale in of node ${nodeId} finished` }, did };
    }
    const nodes = (await this.d.links.for(this.d.cluster).listNodes()).map(nodeLoadOf);
    const decision = decide(this.d.config, nodes, this.d.demand(), this.history, now);
    if (decision.action === 'scale_out') {
      const added = await this.d.provider.launch(decision.count);
      this.history.lastScaleOutAt = now;
      did.push(`launched ${added.map((n) => n.nodeId).join(', ')}`);
    } else if (decision.action === 'scale_in') {
      await this.d.drains.start(this.d.cluster, decision.nodeId, { migrate: true, timeoutMs: this.d.drainTimeoutMs ?? 600_000 });
      this.leaving = decision.nodeId;
      this.history.lastScaleInAt = now;
      did.push(`draining ${decision.nodeId}`);
    }
    if (did.length > 0) this.d.log.info({ decision, did }, 'autoscaler step');
    return { decision, did };
  }
}
