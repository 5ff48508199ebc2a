// Where the autoscaler's nodes come from. A provider only adds and removes machines; the autoscaler drains a node
// (its sandboxes migrate, node-drain.ts) and asks the provider to remove it only once the drain says it is empty.
//
// Providers:
// - local: orchestrator processes on this machine (what `cove up --nodes` starts), for tests and one-box setups;
// - aws-asg: an EC2 Auto Scaling group (desired capacity up; `TerminateInstanceInAutoScalingGroup` with
//   `ShouldDecrementDesiredCapacity` for the drained instance, so the group does not replace it). Not available
//   in this tree: no AWS SDK and no account are reachable here; every call says so with a structured code.

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

export class ProviderUnavailable extends Error {
  readonly code = 'provider_unavailable';
  constructor(provider: string, why: string) {
    super(`the ${provider} node provider is not available here: ${why}`);
    this.name = 'ProviderUnavailable';
  }
}

export interface AwsAsgOptions {
  region: string;
  autoScalingGroupName: string;
}

/** The AWS Auto Scaling group provider: the interface is fixed here; the implementation is not in this tree. */
export class AwsAutoScalingGroupProvider implements NodeProvider {
  readonly name = 'aws-asg';
  constructor(readonly options: AwsAsgOptions) {}

  private unavailable(): never {
    throw new ProviderUnavailable(this.name, `scaling group "${this.options.autoScalingGroupName}" in ${this.options.region} cannot be reached from this build (no AWS client is bundled); use the local provider or scale the group yourself after draining`);
  }

  async list(): Promise<ProvidedNode[]> {
    this.unavailable();
  }

  async launch(_count: number): Promise<ProvidedNode[]> {
    this.unavailable();
  }

  async terminate(_nodeId: string): Promise<void> {
    this.unavailable();
  }
}
