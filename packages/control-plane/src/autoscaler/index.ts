// The autoscaler as other packages use it (`@cove/control-plane/autoscaler`): the CLI's `cove up --autoscale`
// runs this policy and step against a deployment's control plane through its admin API.
export * from './policy.js';
export * from './provider.js';
export { CapacityMisses, type DemandView } from './demand.js';
export { Autoscaler, type AutoscalerDeps, type DrainState, type ScalingEvent, type ScalingTarget, type StepResult } from './controller.js';
