// Cove's firewall lives entirely in its own nftables tables (`inet cove`, `bridge cove`); the host's
// other tables are never read or changed. Policy:
// - sandbox → host: dropped, except replies to connections the host opened (envd /init, traffic proxy);
// - sandbox ↔ sandbox: dropped (bridge table, on top of isolated bridge ports);
// - sandbox → elsewhere: only for addresses in the `internet` set, never to link-local, loopback,
//   private, CGNAT or the node's own LAN ranges, except the host's upstream DNS servers on port 53;
// - nothing new may enter a sandbox from outside the host; masquerade for the subnet.
// nftables base chains of other tables still apply (a drop anywhere wins), which is what we want.

import { readFile } from 'node:fs/promises';
import { run } from './run-command.js';
import { runNftCommands, TenantFsError } from './tenant-fs.js';

export interface FirewallConfig {
  /** Name of Cove's nftables tables (one `inet`, one `bridge`); one per runtime instance on a host. */
  table: string;
  bridge: string;
  /** Host veth ends share this prefix (bridge-level sandbox↔sandbox drop). */
  vethPrefix: string;
  subnetCidr: string;
  /** Upstream DNS servers sandboxes may query (port 53) although they sit in blocked ranges. */
  dnsServers: string[];
  /** Destination ranges sandboxes may never reach, on top of the fixed private/link-local list. */
  extraBlockedCidrs: string[];
  /** The node's egress proxy and DNS filter (node-egress.ts): the only host ports sandboxes may open, on the gateway. */
  egressInput?: { gateway: string; tcp: number[]; udp: number[] };
}

/** Every destination range sandboxes may never reach directly. */
export function blockedCidrs(cfg: FirewallConfig): string[] {
  return [...new Set([...ALWAYS_BLOCKED, ...cfg.extraBlockedCidrs])];
}

const ALWAYS_BLOCKED = ['0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16', '224.0.0.0/4', '240.0.0.0/4'];

const SET = 'internet';

/** Loads (or atomically replaces) Cove's tables; `internetAddresses` restores the allow-set after a restart. */
export async function applyFirewall(cfg: FirewallConfig, internetAddresses: string[]): Promise<void> {
  const b = JSON.stringify(cfg.bridge);
  const TABLE = cfg.table;
  const ports = JSON.stringify(`${cfg.vethPrefix}*`);
  const blocked = blockedCidrs(cfg).join(', ');
  const e = cfg.egressInput;
  // Reached only through a slot table's redirect or by aiming at them; either way the services judge by source.
  const egressInput = e
    ? `iifname ${b} ip saddr ${cfg.subnetCidr} ip daddr ${e.gateway} tcp dport { ${e.tcp.join(', ')} } accept
    iifname ${b} ip saddr ${cfg.subnetCidr} ip daddr ${e.gateway} udp dport { ${e.udp.join(', ')} } accept`
    : '';
  const dns = cfg.dnsServers.length ? cfg.dnsServers.join(', ') : null;
  const elements = internetAddresses.length ? `elements = { ${internetAddresses.join(', ')} }` : '';
  const script = `
table inet ${TABLE}
delete table inet ${TABLE}
table inet ${TABLE} {
  set ${SET} { type ipv4_addr; ${elements} }
  chain input {
    type filter hook input priority filter - 1; policy accept;
    iifname ${b} ct state established,related accept
    ${egressInput}
    iifname ${b} drop
  }
  chain forward {
    type filter hook forward priority filter - 1; policy accept;
    oifname ${b} ct state established,related accept
    oifname ${b} drop
    iifname ${b} ip saddr != ${cfg.subnetCidr} drop
    ${dns ? `iifname ${b} ip saddr @${SET} ip daddr { ${dns} } meta l4proto { tcp, udp } th dport 53 accept` : ''}
    iifname ${b} ip daddr { ${blocked} } drop
    iifname ${b} meta nfproto ipv6 drop
    iifname ${b} ip saddr @${SET} accept
    iifname ${b} drop
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${cfg.subnetCidr} oifname != ${b} masquerade
  }
}
table bridge ${TABLE}
delete table bridge ${TABLE}
table bridge ${TABLE} {
  chain forward {
    type filter hook forward priority filter - 1; policy accept;
    iifname ${ports} oifname ${ports} drop
  }
}
`;
  await run('nft', ['-f', '-'], { input: script });
}

/**
 * One element command, through the node's long-lived helper (a claim must not fork the orchestrator), or by
 * `nft` where libnftables cannot be loaded.
 */
async function elementCommand(verb: 'add' | 'delete', table: string, address: string): Promise<void> {
  try {
    await runNftCommands(`${verb} element inet ${table} ${SET} { ${address} }`);
  } catch (err) {
    if (!(err instanceof TenantFsError && err.code === 'tenant_fs_nft_unavailable')) throw err;
    await run('nft', [verb, 'element', 'inet', table, SET, `{ ${address} }`]);
  }
}

export async function allowInternet(table: string, address: string): Promise<void> {
  await elementCommand('add', table, address);
}

export async function denyInternet(table: string, address: string): Promise<void> {
  // Deleting an absent element fails; destroy is idempotent, so that is fine.
  await elementCommand('delete', table, address).catch(() => undefined);
}

export async function internetSetHas(table: string, address: string): Promise<boolean> {
  const r = await run('nft', ['-j', 'list', 'set', 'inet', table, SET], { allowFailure: true });
  return r.code === 0 && r.stdout.includes(`"${address}"`);
}

/** The host's upstream resolvers (systemd-resolved's upstream list when the stub is in use). */
export async function hostNameservers(): Promise<string[]> {
  const parse = (text: string): string[] =>
    [...text.matchAll(/^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/gm)].map((m) => m[1]!);
  const main = parse(await readFile('/etc/resolv.conf', 'utf8').catch(() => ''));
  if (main.length && main.every((a) => !a.startsWith('127.'))) return main;
  const resolved = parse(await readFile('/run/systemd/resolve/resolv.conf', 'utf8').catch(() => ''));
  return resolved.filter((a) => !a.startsWith('127.'));
}

/** The host's directly connected IPv4 networks other than Cove's bridge (the node's LAN). */
export async function hostConnectedSubnets(bridge: string): Promise<string[]> {
  const r = await run('ip', ['-4', '-o', 'route', 'show', 'scope', 'link'], { allowFailure: true });
  const out: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^(\d+\.\d+\.\d+\.\d+\/\d+) dev (\S+)/.exec(line.trim());
    if (m?.[1] && m[2] !== bridge) out.push(m[1]);
  }
  return out;
}

/** Deletes Cove's tables; absent tables are fine. */
export async function removeFirewall(table: string): Promise<void> {
  await run('nft', ['delete', 'table', 'inet', table], { allowFailure: true });
  await run('nft', ['delete', 'table', 'bridge', table], { allowFailure: true });
}
