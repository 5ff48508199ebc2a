// A sandbox's egress as the API takes it (E2B's `allow_internet_access` and `network.allowOut/denyOut`) and as its
// node enforces it: parsed once with @cove/egress (400 with every issue), reduced to normalised IPv4 CIDRs and
// hostnames (`example.com`, `*.example.com`; the node's egress proxy and DNS filter enforce those), and the
// customer's egressProxy, and `rules` (header transforms the node's egress proxy applies, TLS terminated with the
// sandbox's CA, which nodes derive: the control plane never holds it).

import { hasDenyAll, parseNetworkPolicy, PolicyError, rulesToWire, type EgressHostRule } from '@cove/egress';
import { InvalidNetworkPolicy } from '../errors.js';

/** Normalised rules (CIDR texts; allowOut also hostnames); allow wins over deny; both empty, no proxy = no filter. */
export interface EgressRules {
  allowOut: string[];
  denyOut: string[];
  /** E2B's egressProxy as the user gave it (the node parses it again); absent = direct */
  egressProxy?: { address: string; username?: string; password?: string };
  /** E2B's rules in the spec's wire form (normalised host keys, lower-cased header names); absent = none */
  rules?: EgressHostRule[];
}

/** What a node needs: whether the sandbox has any egress at all, and the filter on it. */
export interface NodeNetwork {
  allowInternetAccess: boolean;
  egress: EgressRules;
  /** E2B's maskRequestHost ('' = none): ingress, applied by the node proxy, validated with the rest */
  maskRequestHost: string;
}

/** The egress part of E2B's network config (create's `network`, or an update's body). */
export interface EgressInput {
  allowOut?: string[];
  denyOut?: string[];
  rules?: Record<string, unknown>;
  egressProxy?: unknown;
  maskRequestHost?: string;
}

export function nodeNetworkOf(allowInternetAccess: boolean | null | undefined, network: EgressInput | null | undefined): NodeNetwork {
  let policy;
  try {
    policy = parseNetworkPolicy({
      ...(network?.allowOut !== undefined ? { allowOut: network.allowOut } : {}),
      ...(network?.denyOut !== undefined ? { denyOut: network.denyOut } : {}),
      ...(network?.egressProxy !== undefined ? { egressProxy: network.egressProxy } : {}),
      ...(network?.rules !== undefined ? { rules: network.rules } : {}),
      ...(network?.maskRequestHost !== undefined ? { maskRequestHost: network.maskRequestHost } : {}),
      ...(allowInternetAccess !== null && allowInternetAccess !== undefined ? { allowInternetAccess } : {}),
    });
  } catch (err) {
    if (err instanceof PolicyError) throw new InvalidNetworkPolicy(err.issues);
    throw err;
  }
  const allowOut = [...policy.allowCidrs.map((c) => c.text), ...policy.allowHosts, ...policy.allowWildcards.map((w) => `*.${w}`)];
  const denyOut = policy.denyCidrs.map((c) => c.text);
  // A deny-all that allows nothing: no egress at all, as before policies, but still the filter, whose DNS
  // redirect lets the node's resolver answer REFUSED at once (a dropped query would hang the sandbox's lookups).
  const maskRequestHost = policy.maskRequestHost ?? '';
  if (hasDenyAll(policy) && allowOut.length === 0) return { allowInternetAccess: false, egress: { allowOut: [], denyOut }, maskRequestHost };
  const p = policy.egressProxy;
  const egressProxy = p
    ? {
        address: `${p.kind === 'http-connect' ? 'http' : 'socks5'}://${p.host}:${p.port}`,
        ...(p.username !== undefined ? { username: p.username } : {}),
        ...(p.password !== undefined ? { password: p.password } : {}),
      }
    : undefined;
  const rules = policy.rules.size ? rulesToWire(policy) : undefined;
  return { allowInternetAccess: true, egress: { allowOut, denyOut, ...(egressProxy ? { egressProxy } : {}), ...(rules ? { rules } : {}) }, maskRequestHost };
}
