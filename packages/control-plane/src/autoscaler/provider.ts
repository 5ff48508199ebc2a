// Where the autoscaler's nodes come from. A provider only adds and removes machines; the autoscaler drains a node
// (its sandboxes migrate, node-drain.ts) and asks the provider to remove it only once the drain says it is empty.
//
// Providers:
// - local: orchestrator processes on this machine (what `cove up --nodes` starts), for tests and one-box setups
//   (packages/cli/src/autoscale.ts);
// - aws-asg: an EC2 Auto Scaling group, through the official `@aws-sdk/client-auto-scaling` (below).

import {
  AutoScalingClient,
  AutoScalingServiceException,
  DescribeAutoScalingGroupsCommand,
  SetDesiredCapacityCommand,
  TerminateInstanceInAutoScalingGroupCommand,
  type AutoScalingGroup,
} from '@aws-sdk/client-auto-scaling';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ProvidedNode {
  /** The cluster's node id (what the edge lists). */
  nodeId: string;
  /** The provider's own handle (a pid, an instance id). */
  handle: string;
}

export interface NodeProvider {
  readonly name: string;
  /** The nodes this provider runs now. */
  list(): Promise<ProvidedNode[]>;
  /** Starts `count` more nodes; they join the cluster on their own (their bootstrap registers them). */
  launch(count: number): Promise<ProvidedNode[]>;
  /** Removes a node that a drain reported empty. */
  terminate(nodeId: string): Promise<void>;
}

/**
 * What a provider call failed with, as a code callers branch on:
 * - provider_unavailable: unreachable, throttled or failing (5xx) after the client's retries — try again later;
 * - provider_rejected: the provider refused the call (credentials, permissions, validation);
 * - provider_not_found: the scaling group does not exist;
 * - provider_at_capacity: the group is at its maximum size, nothing was launched;
 * - node_not_owned: a terminate of a node that is not one of the group's instances (nothing was terminated).
 */
export type ProviderErrorCode = 'provider_unavailable' | 'provider_rejected' | 'provider_not_found' | 'provider_at_capacity' | 'node_not_owned';

export class ProviderError extends Error {
  constructor(
    readonly code: ProviderErrorCode,
    message: string,
    /** The provider's own error code and HTTP status, when it answered. */
    readonly details?: { providerCode?: string; httpStatus?: number; requestId?: string },
  ) {
    super(message);
    this.name = 'ProviderError';
  }
}

/**
 * Node ↔ instance: on AWS a node's id *is* its EC2 instance id. The join (deploy/image/bootstrap/cove-node-join.mjs)
 * names the node after its instance id, and the node credential the enroller issues is HMAC(key, "cove-node:" +
 * instance id), which the edge checks against the node id a heartbeat claims — so a node of the group cannot
 * register under another name. A node id that is not an instance id is a node joined by hand: not the group's.
 */
const INSTANCE_ID = /^i-[0-9a-f]{8,32}$/;
export function instanceIdOfNode(nodeId: string): string | undefined {
  return INSTANCE_ID.test(nodeId) ? nodeId : undefined;
}
export function nodeIdOfInstance(instanceId: string): string {
  return instanceId;
}

/** Lifecycle states of an instance that has left or is leaving the group: not a node of it any more. */
const GONE = /^(Terminating|Terminated|Detaching|Detached)/;

export interface AwsAsgOptions {
  autoScalingGroupName: string;
  /** Default: the standard AWS chain (AWS_REGION, the profile, the instance's metadata). */
  region?: string;
  /** Another endpoint than the regional one: a VPC interface endpoint, or a stand-in in tests. */
  endpoint?: string;
  /** Default: the standard AWS credential chain (env, profile, SSO, web identity, the instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Attempts per call, retries included (throttling, 5xx, network); default 3, the SDK's standard mode. */
  maxAttempts?: number;
  /** How long `launch` waits for the new instances to appear in the group (default 60 s); polled every `pollMs`. */
  launchWaitMs?: number;
  pollMs?: number;
}

/**
 * An EC2 Auto Scaling group as a node provider. Scale out raises the desired capacity (never past the group's
 * max); scale in terminates the drained node's own instance with ShouldDecrementDesiredCapacity, so the group
 * neither replaces it nor picks another instance (which might hold sandboxes) to remove.
 */
export class AwsAutoScalingGroupProvider implements NodeProvider {
  readonly name = 'aws-asg';
  private readonly client: AutoScalingClient;

  constructor(readonly options: AwsAsgOptions) {
    this.client = new AutoScalingClient({
      ...(options.region ? { region: options.region } : {}),
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.credentials ? { credentials: options.credentials } : {}),
      maxAttempts: options.maxAttempts ?? 3,
      // An unanswered call must not hold the autoscaler's step forever.
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 15_000 },
    });
  }

  private get group(): string {
    return this.options.autoScalingGroupName;
  }

  /** Runs one call; the SDK's failures become ProviderErrors with their AWS code kept. */
  private async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof ProviderError) throw err;
      const status = err instanceof AutoScalingServiceException ? err.$metadata?.httpStatusCode : undefined;
      const awsCode = err instanceof AutoScalingServiceException ? err.name : undefined;
      const details = { providerCode: awsCode ?? (err as { code?: string })?.code, httpStatus: status, requestId: err instanceof AutoScalingServiceException ? err.$metadata?.requestId : undefined };
      const detail = err instanceof Error ? err.message : String(err);
      // Not answered, throttled (after the SDK's retries) or failing on AWS's side: try again on a later step.
      const transient =
        !(err instanceof AutoScalingServiceException) ||
        (status ?? 500) >= 500 ||
        /Throttl|RequestLimitExceeded|ScalingActivityInProgress|ResourceContention/.test(awsCode ?? '');
      const code = transient ? 'provider_unavailable' : 'provider_rejected';
      throw new ProviderError(code, `${what} on scaling group "${this.group}" failed${awsCode ? ` (${awsCode}${status ? ` ${status}` : ''})` : ''}: ${detail}`, details);
    }
  }

  private async describe(): Promise<AutoScalingGroup> {
    const out = await this.call('DescribeAutoScalingGroups', () => this.client.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [this.group] })));
    const g = out.AutoScalingGroups?.find((x) => x.AutoScalingGroupName === this.group);
    if (!g) throw new ProviderError('provider_not_found', `scaling group "${this.group}" does not exist (or this role may not describe it)`);
    return g;
  }

  private static members(g: AutoScalingGroup): ProvidedNode[] {
    return (g.Instances ?? [])
      .filter((i) => i.InstanceId && INSTANCE_ID.test(i.InstanceId) && !GONE.test(i.LifecycleState ?? ''))
      .map((i) => ({ nodeId: nodeIdOfInstance(i.InstanceId!), handle: i.InstanceId! }));
  }

  async list(): Promise<ProvidedNode[]> {
    return AwsAutoScalingGroupProvider.members(await this.describe());
  }

  async launch(count: number): Promise<ProvidedNode[]> {
    if (!Number.isInteger(count) || count < 1) throw new RangeError(`launch count must be a positive integer, not ${count}`);
    const g = await this.describe();
    const before = new Set(AwsAutoScalingGroupProvider.members(g).map((n) => n.handle));
    const desired = g.DesiredCapacity ?? 0;
    const max = g.MaxSize ?? desired;
    const target = Math.min(desired + count, max);
    if (target <= desired) {
      throw new ProviderError('provider_at_capacity', `scaling group "${this.group}" is at its maximum size (${max}); raise MaxSize to add nodes`);
    }
    await this.call('SetDesiredCapacity', () =>
      // HonorCooldown false: the autoscaler keeps its own cooldowns; the group's are for its own scaling policies.
      this.client.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: this.group, DesiredCapacity: target, HonorCooldown: false })),
    );
    // The group starts the instances on its own; report them once they show (bounded: they join when they boot).
    const deadline = Date.now() + (this.options.launchWaitMs ?? 60_000);
    let added: ProvidedNode[] = [];
    for (;;) {
      try {
        added = AwsAutoScalingGroupProvider.members(await this.describe()).filter((n) => !before.has(n.handle));
      } catch {
        // The capacity was raised: failing now would let the caller count no scale out and raise it again.
      }
      if (added.length >= target - desired || Date.now() >= deadline) return added;
      await sleep(this.options.pollMs ?? 2_000);
    }
  }

  async terminate(nodeId: string): Promise<void> {
    const instanceId = instanceIdOfNode(nodeId);
    if (!instanceId) throw new ProviderError('node_not_owned', `node "${nodeId}" is not an EC2 instance of scaling group "${this.group}" (its id is not an instance id)`);
    const g = await this.describe();
    const inst = (g.Instances ?? []).find((i) => i.InstanceId === instanceId);
    // Only an instance of this group, checked before the call: the role may be allowed to terminate others.
    if (!inst) throw new ProviderError('node_not_owned', `instance ${instanceId} is not in scaling group "${this.group}"; nothing was terminated`);
    if (GONE.test(inst.LifecycleState ?? '')) return; // already leaving: a repeated terminate (a restarted autoscaler) is done
    await this.call('TerminateInstanceInAutoScalingGroup', () =>
      this.client.send(new TerminateInstanceInAutoScalingGroupCommand({ InstanceId: instanceId, ShouldDecrementDesiredCapacity: true })),
    );
  }

  /** Closes the client's connections. */
  destroy(): void {
    this.client.destroy();
  }
}
