// A sandbox's egress as the API takes it (E2B's `allow_internet_access` and `network.allowOut/denyOut`) and as its
// node enforces it: parsed once with @cove/egress (400 with every issue), reduced to IPv4 CIDR lists. What the
// node cannot enforce yet (hostname rules, transforms, a chained proxy) is refused with 501, never ignored.

import { hasDenyAll, parseNetworkPolicy, PolicyError } from '@cove/egress';
import { InvalidNetworkPolicy, NotImplemented } from '../errors.js';

/** Normalised address rules (CIDR texts); allow wins over deny; both empty = no filter. */
export interface EgressRules {
  allowOut: string[];
  denyOut: string[];
}

/** What a node needs: whether the sandbox has any egress at all, and the filter on it. */
export interface NodeNetwork {
  allowInternetAccess: boolean;
  egress: EgressRules;
}

/** The egress part of E2B's network config (create's `network`, or an update's body). */
export interface EgressInput {
  allowOut?: string[];
  denyOut?: string[];
  rules?: Record<string, unknown>;
  egressProxy?: unknown;
}

export function nodeNetworkOf(allowInternetAccess: boolean | null | undefined, network: EgressInput | null | undefined): NodeNetwork {
  if (network?.rules && Object.keys(network.rules).length > 0) throw new NotImplemented('egress transform rules (network.rules)');
  if (network?.egressProxy) throw new NotImplemented('egress proxy (network.egressProxy)');
  let policy;
  try {
    policy = parseNetworkPolicy({
      ...(network?.allowOut !== undefined ? { allowOut: network.allowOut } : {}),
      ...(network?.denyOut !== undefined ? { denyOut: network.denyOut } : {}),
      ...(allowInternetAccess !== null && allowInternetAccess !== undefined ? { allowInternetAccess } : {}),
    });
  } catch (err) {
    if (err instanceof PolicyError) throw new InvalidNetworkPolicy(err.issues);
    throw err;
  }
  if (policy.allowHosts.length + policy.allowWildcards.length > 0) throw new NotImplemented('hostname rules in network.allowOut');
  // A deny-all with no allowed address needs no filter: the sandbox simply has no egress, as before policies.
  if (hasDenyAll(policy) && policy.allowCidrs.length === 0) return { allowInternetAccess: false, egress: { allowOut: [], denyOut: [] } };
  return {
    allowInternetAccess: true,
    egress: { allowOut: policy.allowCidrs.map((c) => c.text), denyOut: policy.denyCidrs.map((c) => c.text) },
  };
}
