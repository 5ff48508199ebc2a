// A slot's egress filter (docs/network-policy.md): @cove/egress's per-sandbox nft table, keyed by the slot's host
// veth and address, on top of Cove's own `internet` set (nft-firewall.ts). That set says whether the slot has any
// egress at all and its drops (private ranges, other sandboxes, the host) still win: a drop in any base chain is
// final, so an allow here can never open what Cove's table closes. Only address rules are enforced here; hostname
// rules need the node proxy and resolver, which the node does not run yet, so they are refused.

import { applyNft, parseNetworkPolicy, PolicyError, renderRemoveNft, renderSandboxNft, type EgressPolicy, type NodePorts } from '@cove/egress';

/** The address rules a slot carries (normalised CIDR texts), as the spec and the slot record hold them. */
export interface EgressRules {
  allowOut: string[];
  denyOut: string[];
}

export const NO_EGRESS_RULES: EgressRules = Object.freeze({ allowOut: [], denyOut: [] }) as EgressRules;

/** No proxy or resolver runs on the node yet: no policy that would redirect to one is accepted (egressPolicyOf). */
const NO_PORTS: NodePorts = { http: 0, tls: 0, tunnel: 0, httpToDenied: 0, tlsToDenied: 0, dns: 0 };

/** Parses the rules again on the node (the spec crossed a network); throws PolicyError for anything else. */
export function egressPolicyOf(rules: EgressRules): EgressPolicy {
  const policy = parseNetworkPolicy({ allowOut: rules.allowOut, denyOut: rules.denyOut });
  if (policy.allowHosts.length + policy.allowWildcards.length > 0) {
    throw new PolicyError([{ code: 'invalid_selector', field: 'allowOut', message: 'hostname rules are not enforced on this node yet' }]);
  }
  return policy;
}

export function hasEgressRules(rules: EgressRules | undefined): rules is EgressRules {
  return rules !== undefined && rules.allowOut.length + rules.denyOut.length > 0;
}

/** nft table name of a slot's filter (`[A-Za-z0-9_.-]`, unique per runtime instance and slot). */
export function egressTableOf(instance: string, slotId: string): string {
  return `${instance}_egress_${slotId}`;
}

/**
 * Installs or replaces (one nft transaction: the kernel keeps the previous table on failure) a slot's filter.
 * Rules without entries remove it. A DNS redirect to the node resolver (deny-all) points at port 0 until the
 * resolver exists, so DNS under a deny-all is not answered (fails closed) unless a resolver address is allowed.
 */
export async function applySlotEgress(table: string, iface: string, sandboxIp: string, rules: EgressRules): Promise<void> {
  if (!hasEgressRules(rules)) {
    await applyNft(renderRemoveNft(table));
    return;
  }
  const policy = egressPolicyOf(rules);
  // The slot's host veth is a bridge port: matched by source address, source checked at the bridge.
  await applyNft(renderSandboxNft({ table, iface, sandboxIp, policy, ports: NO_PORTS, bridged: true }));
}

export async function removeSlotEgress(table: string): Promise<void> {
  await applyNft(renderRemoveNft(table));
}
