// A slot's egress filter (docs/network-policy.md): @cove/egress's per-sandbox nft table, keyed by the slot's host
// veth and address, on top of Cove's own `internet` set (nft-firewall.ts). That set says whether the slot has any
// egress at all and its drops (private ranges, other sandboxes, the host) still win: a drop in any base chain is
// final, so an allow here can never open what Cove's table closes. Hostname rules and DNS filtering go through
// the node's egress services (node-egress.ts): the table redirects to their ports, and they hold the policy.

import { needsProxy, parseNetworkPolicy, PolicyError, renderRemoveNft, renderSandboxNft, rulesFromWire, rulesToWire, type EgressHostRule, type EgressPolicy, type NodePorts } from '@cove/egress';
import { applyNftScript } from './nft-firewall.js';
import type { NodeEgress } from './node-egress.js';
import { run } from './run-command.js';

/** The customer's proxy a slot's TCP is tunnelled through (E2B's egressProxy), as the spec carries it. */
export interface EgressProxyRule {
  address: string;
  username?: string;
  password?: string;
}

/** The rules a slot carries (normalised CIDR texts and hostnames), as the spec and the slot record hold them. */
export interface EgressRules {
  allowOut: string[];
  denyOut: string[];
  egressProxy?: EgressProxyRule;
  /** E2B's `rules` (header transforms), in the spec's wire form; absent = none */
  rules?: EgressHostRule[];
  /** with rules: the sandbox's team, whose E2B Secrets `${e2b.secrets.x}` resolves */
  teamId?: string;
}

export const NO_EGRESS_RULES: EgressRules = Object.freeze({ allowOut: [], denyOut: [] }) as EgressRules;

/** Parses the rules again on the node (the spec crossed a network); throws PolicyError for anything else. */
export function egressPolicyOf(rules: EgressRules): EgressPolicy {
  return parseNetworkPolicy({
    allowOut: rules.allowOut,
    denyOut: rules.denyOut,
    ...(rules.egressProxy ? { egressProxy: rules.egressProxy } : {}),
    ...(rules.rules?.length ? { rules: rulesFromWire(rules.rules) } : {}),
  });
}

/** The rules of a parsed policy in their normalised text form (what a slot record keeps). */
export function egressRulesText(p: EgressPolicy): EgressRules {
  const e = p.egressProxy;
  return {
    allowOut: [...p.allowCidrs.map((c) => c.text), ...p.allowHosts, ...p.allowWildcards.map((w) => `*.${w}`)],
    denyOut: p.denyCidrs.map((c) => c.text),
    ...(e
      ? {
          egressProxy: {
            address: `${e.kind === 'http-connect' ? 'http' : 'socks5'}://${e.host}:${e.port}`,
            ...(e.username !== undefined ? { username: e.username } : {}),
            ...(e.password !== undefined ? { password: e.password } : {}),
          },
        }
      : {}),
    ...(p.rules.size ? { rules: rulesToWire(p) } : {}),
  };
}

export function hasEgressRules(rules: EgressRules | undefined): rules is EgressRules {
  return rules !== undefined && (rules.allowOut.length + rules.denyOut.length > 0 || rules.egressProxy !== undefined || (rules.rules?.length ?? 0) > 0);
}

/** nft table name of a slot's filter (`[A-Za-z0-9_.-]`, unique per runtime instance and slot). */
export function egressTableOf(instance: string, slotId: string): string {
  return `${instance}_egress_${slotId}`;
}

export interface SlotEgressTarget {
  table: string;
  iface: string;
  sandboxIp: string;
  sandboxId: string;
}

/**
 * Installs or replaces (one nft transaction: the kernel keeps the previous table on failure) a slot's filter, and
 * binds its policy in the node's egress services first, so a redirected flow never finds the services without
 * it. Rules without entries remove both. A policy that needs the proxy (hostname allows) is
 * refused when they are not running, never installed half-enforced.
 */
export async function applySlotEgress(services: NodeEgress | undefined, t: SlotEgressTarget, rules: EgressRules): Promise<void> {
  if (!hasEgressRules(rules)) {
    await applyNftScript(renderRemoveNft(t.table));
    // Everything is allowed now: flows already open through the proxy stay.
    services?.unbind(t.sandboxIp, false);
    return;
  }
  const policy = egressPolicyOf(rules);
  const ports: NodePorts | undefined = services?.nodePorts();
  if ((!services || !ports) && needsProxy(policy)) {
    // (A deny-all's DNS redirect then points at port 0: unanswered, closed all the same.)
    throw new PolicyError([{ code: 'invalid_selector', field: 'allowOut', message: 'this node runs no egress proxy: hostname rules and egressProxy cannot be enforced' }]);
  }
  if (policy.rules.size > 0 && !services?.canTerminate()) {
    throw new PolicyError([{ code: 'invalid_rule_host', field: 'rules', message: 'this node cannot terminate TLS for rules (no cluster key to derive sandbox CAs from)' }]);
  }
  // Rules: the proxy terminates TLS for their hosts with the sandbox's CA (the one its trust store holds).
  const ca = policy.rules.size > 0 ? await services!.caFor(t.sandboxId) : undefined;
  const prev = services?.bind(t.sandboxIp, t.sandboxId, policy, ca, rules.teamId);
  try {
    // The slot's host veth is routed (slot-network.ts): matched by input interface, its source checked there too.
    await applyNftScript(renderSandboxNft({ table: t.table, iface: t.iface, sandboxIp: t.sandboxIp, policy, ports: ports ?? NO_PORTS }));
  } catch (err) {
    services?.restore(t.sandboxIp, prev);
    throw err;
  }
  // Flows already open through the proxy that the new policy no longer allows are cut now.
  services?.recheck(t.sandboxIp);
}

/** Only for policies that redirect nothing (checked above). */
const NO_PORTS: NodePorts = { http: 0, tls: 0, tunnel: 0, httpToDenied: 0, tlsToDenied: 0, dns: 0 };

export async function removeSlotEgress(services: NodeEgress | undefined, table: string, sandboxIp: string | undefined): Promise<void> {
  if (sandboxIp) services?.unbind(sandboxIp, true);
  await applyNftScript(renderRemoveNft(table));
}

/**
 * The slot ids of this instance's egress tables present in the kernel (either family). A table outlives its slot
 * when the slot went away without destroy() (a crash, a purge): it matches by source address, so it would filter
 * whichever new slot is given that address. prepare() and teardownHost() sweep them.
 */
export async function listSlotEgressTables(instance: string): Promise<string[]> {
  const r = await run('nft', ['-j', 'list', 'tables'], { allowFailure: true });
  if (r.code !== 0) return [];
  const prefix = `${instance}_egress_`;
  const ids = new Set<string>();
  for (const e of (JSON.parse(r.stdout) as { nftables?: Array<{ table?: { family: string; name: string } }> }).nftables ?? []) {
    const name = e.table?.name;
    const id = name?.startsWith(prefix) ? name.slice(prefix.length) : '';
    // Only names this runtime could have made (slot ids are [a-z0-9]); anything else is not ours to remove.
    if ((e.table?.family === 'ip' || e.table?.family === 'bridge') && /^[a-z0-9]+$/.test(id)) ids.add(id);
  }
  return [...ids];
}
