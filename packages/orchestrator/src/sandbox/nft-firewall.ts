// Cove's firewall lives entirely in its own nftables table (`inet cove`); the host's other tables are never read
// or changed. Sandboxes are told apart by interface: their host veth ends (`<vethPrefix>*`, routed, slot-network.ts)
// and the gateway link (the bridge an older Cove's slots were ports of, until prepare() routes them). Policy:
// - a packet from a sandbox whose source does not route back out of the interface it came in by: dropped (no
//   forged source passes, whatever the host's rp_filter says);
// - sandbox → host: dropped, except replies to connections the host opened (envd /init, traffic proxy);
// - sandbox ↔ sandbox: dropped;
// - sandbox → elsewhere: only for addresses in the `internet` set, never to link-local, loopback,
//   private, CGNAT or the node's own LAN ranges, except the host's upstream DNS servers on port 53;
// - nothing new may enter a sandbox from outside the host; masquerade for the subnet.
// nftables base chains of other tables still apply (a drop anywhere wins), which is what we want.

import { readFile } from 'node:fs/promises';
import { run } from './run-command.js';
import { runNftCommands, TenantFsError } from './tenant-fs.js';

export interface FirewallConfig {
  /** Name of Cove's nftables table (`inet`); one per runtime instance on a host. */
  table: string;
  /** The node's gateway link (slot-network.ts). */
  gatewayLink: string;
  /** Host veth ends share this prefix. */
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

/** Loads (or atomically replaces) Cove's table; `internetAddresses` restores the allow-set after a restart. */
export async function applyFirewall(cfg: FirewallConfig, internetAddresses: string[]): Promise<void> {
  const TABLE = cfg.table;
  // Every rule about sandbox traffic lives in a chain jumped to for each of these interface matches.
  const sandboxIfaces = [JSON.stringify(`${cfg.vethPrefix}*`), JSON.stringify(cfg.gatewayLink)];
  const each = (rule: (iface: string) => string): string => sandboxIfaces.map(rule).join('\n    ');
  const blocked = blockedCidrs(cfg).join(', ');
  const e = cfg.egressInput;
  // Reached only through a slot table's redirect or by aiming at them; either way the services judge by source.
  const egressInput = e
    ? `ip saddr ${cfg.subnetCidr} ip daddr ${e.gateway} tcp dport { ${e.tcp.join(', ')} } accept
    ip saddr ${cfg.subnetCidr} ip daddr ${e.gateway} udp dport { ${e.udp.join(', ')} } accept`
    : '';
  const dns = cfg.dnsServers.length ? cfg.dnsServers.join(', ') : null;
  const elements = internetAddresses.length ? `elements = { ${internetAddresses.join(', ')} }` : '';
  const script = `
table inet ${TABLE}
delete table inet ${TABLE}
table inet ${TABLE} {
  set ${SET} { type ipv4_addr; ${elements} }
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    # A sandbox's source must route back out of its own veth (its /32 route): strict reverse-path, before conntrack
    # and NAT, so a forged source is neither answered nor judged as another sandbox.
    ${each((i) => `iifname ${i} fib saddr . iif oif missing drop`)}
  }
  chain from_sandbox_input {
    ct state established,related accept
    ${egressInput}
    drop
  }
  chain input {
    type filter hook input priority filter - 1; policy accept;
    ${each((i) => `iifname ${i} jump from_sandbox_input`)}
  }
  chain to_sandbox {
    ct state established,related accept
    drop
  }
  chain from_sandbox_forward {
    ip saddr != ${cfg.subnetCidr} drop
    ${dns ? `ip saddr @${SET} ip daddr { ${dns} } meta l4proto { tcp, udp } th dport 53 accept` : ''}
    ip daddr { ${blocked} } drop
    meta nfproto ipv6 drop
    ip saddr @${SET} accept
    drop
  }
  chain forward {
    type filter hook forward priority filter - 1; policy accept;
    ${each((i) => `oifname ${i} jump to_sandbox`)}
    ${each((i) => `iifname ${i} jump from_sandbox_forward`)}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ${each((i) => `oifname ${i} return`)}
    ip saddr ${cfg.subnetCidr} masquerade
  }
}
table bridge ${TABLE}
delete table bridge ${TABLE}
`;
  await applyNftScript(script);
}

/** The helper takes nft requests of at most this many bytes (tenant-fs.c op_nft); a longer one goes to `nft -f -`. */
const NFT_HELPER_MAX_BYTES = 65536;

/**
 * An nft script (nft's own syntax, one transaction) through the node's long-lived helper and libnftables, or by
 * `nft -f -` from the spawn broker where libnftables cannot be loaded. Never an `nft` forked by the orchestrator
 * itself: a fork of its heap stopped the event loop ~20 ms on every slot's teardown (docs/performance.md).
 */
export async function applyNftScript(script: string): Promise<void> {
  if (Buffer.byteLength(script) > NFT_HELPER_MAX_BYTES) {
    await run('nft', ['-f', '-'], { input: script });
    return;
  }
  try {
    await runNftCommands(script);
  } catch (err) {
    if (!(err instanceof TenantFsError && err.code === 'tenant_fs_nft_unavailable')) throw err;
    await run('nft', ['-f', '-'], { input: script });
  }
}

/** One element command (a claim's or a teardown's change to the internet set). */
async function elementCommand(verb: 'add' | 'delete', table: string, address: string): Promise<void> {
  await applyNftScript(`${verb} element inet ${table} ${SET} { ${address} }\n`);
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

/** The host's directly connected IPv4 networks other than Cove's gateway link (the node's LAN). */
export async function hostConnectedSubnets(gatewayLink: string): Promise<string[]> {
  const r = await run('ip', ['-4', '-o', 'route', 'show', 'scope', 'link'], { allowFailure: true });
  const out: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^(\d+\.\d+\.\d+\.\d+\/\d+) dev (\S+)/.exec(line.trim());
    if (m?.[1] && m[2] !== gatewayLink) out.push(m[1]);
  }
  return out;
}

/** Deletes Cove's tables (and the `bridge` table an older Cove made); absent tables are fine. */
export async function removeFirewall(table: string): Promise<void> {
  await run('nft', ['delete', 'table', 'inet', table], { allowFailure: true });
  await run('nft', ['delete', 'table', 'bridge', table], { allowFailure: true });
}
