// The nft side of one sandbox's egress policy: addresses are judged in the kernel (allow/deny interval sets),
// while TCP 80/443 (hostname rules, transforms), all TCP (chained proxy) and DNS are redirected to the node's
// proxy and resolver ports. One table per sandbox, replaced in a single `nft -f` transaction so a live update
// never leaves a moment without rules.

import { spawn } from 'node:child_process';
import { isIPv4 } from 'node:net';
import { type EgressPolicy, hasDenyAll, needsProxy } from './policy.js';

export interface NodePorts {
  /** plain HTTP interception (sandbox TCP 80) */
  http: number;
  /** TLS interception (sandbox TCP 443) */
  tls: number;
  /** any other TCP when the sandbox has an egressProxy */
  tunnel: number;
  /** TCP 80 / 443 to a denied address when only hostname allows need the proxy (no original address needed) */
  httpToDenied: number;
  tlsToDenied: number;
  /** DNS resolver, UDP and TCP */
  dns: number;
}

export interface SandboxNftSpec {
  /** nft table name; must be unique per sandbox (e.g. `cove_egress_<slot>`) */
  table: string;
  /** the host side of the sandbox's veth: everything it sends enters the node here */
  iface: string;
  /** the sandbox's own address: the only source accepted from its iface (the proxy and resolver key on it) */
  sandboxIp: string;
  policy: EgressPolicy;
  ports: NodePorts;
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

function elements(cidrs: { text: string }[]): string {
  return cidrs.length ? ` elements = { ${cidrs.map((c) => c.text).join(', ')} };` : '';
}

/** Whether DNS is redirected to the node resolver: under a deny-all, so only allowed names resolve. */
export function filtersDns(policy: EgressPolicy): boolean {
  return hasDenyAll(policy);
}

/** The full nft script for one sandbox (pure; names are validated because they are spliced into the script). */
export function renderSandboxNft(spec: SandboxNftSpec): string {
  const { table, iface, policy, ports, sandboxIp } = spec;
  if (!NAME.test(table) || !NAME.test(iface) || iface.length > 15) throw new Error(`unsafe nft table or interface name ${JSON.stringify([table, iface])}`);
  if (!isIPv4(sandboxIp)) throw new Error(`not an IPv4 sandbox address: ${JSON.stringify(sandboxIp)}`);
  const i = `iifname "${iface}"`;
  const pre: string[] = [];
  if (filtersDns(policy)) {
    pre.push(`${i} udp dport 53 redirect to :${ports.dns}`, `${i} tcp dport 53 redirect to :${ports.dns}`);
  }
  if (policy.rules.size > 0 || policy.egressProxy) {
    // Every HTTP(S) flow: transforms and the chained proxy apply whatever the address.
    pre.push(`${i} tcp dport 80 redirect to :${ports.http}`, `${i} tcp dport 443 redirect to :${ports.tls}`);
  } else if (needsProxy(policy)) {
    // Only hostname allows: an allowed or undenied address goes direct (a name cannot deny), a denied one can
    // only be let through by its name, so the proxy needs no original address for it.
    pre.push(
      `${i} ip daddr @allow accept`,
      `${i} ip daddr @deny tcp dport 80 redirect to :${ports.httpToDenied}`,
      `${i} ip daddr @deny tcp dport 443 redirect to :${ports.tlsToDenied}`,
    );
  }
  if (policy.egressProxy) pre.push(`${i} meta l4proto tcp redirect to :${ports.tunnel}`);
  return [
    `table ip ${table}`,
    `delete table ip ${table}`,
    `table ip ${table} {`,
    `  set allow { type ipv4_addr; flags interval; auto-merge;${elements(policy.allowCidrs)} }`,
    `  set deny { type ipv4_addr; flags interval; auto-merge;${elements(policy.denyCidrs)} }`,
    // Before NAT: a sandbox that forges another source address would be judged (and answered) as someone else.
    `  chain sandbox_antispoof {`,
    `    type filter hook prerouting priority raw; policy accept;`,
    `    ${i} ip saddr != ${sandboxIp} drop`,
    `  }`,
    `  chain sandbox_prerouting {`,
    `    type nat hook prerouting priority dstnat; policy accept;`,
    ...pre.map((r) => `    ${r}`),
    `  }`,
    `  chain sandbox_forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    // Allow wins over deny; a reject (not a silent drop) makes a denied connect fail fast in the sandbox.
    `    ${i} ip daddr @allow accept`,
    `    ${i} ip daddr @deny meta l4proto tcp reject with tcp reset`,
    `    ${i} ip daddr @deny reject with icmp type admin-prohibited`,
    `  }`,
    `}`,
    '',
  ].join('\n');
}

export function renderRemoveNft(table: string): string {
  if (!NAME.test(table)) throw new Error(`unsafe nft table name ${JSON.stringify(table)}`);
  // Both families: a slot from before routed veths kept its source check in a `bridge` table of the same name.
  return `table ip ${table}\ndelete table ip ${table}\ntable bridge ${table}\ndelete table bridge ${table}\n`;
}

/** Run an nft script as one transaction (stdin, never a temp file). `prefix` runs it elsewhere, e.g. `ip netns exec X`. */
export function applyNft(script: string, prefix: string[] = []): Promise<void> {
  const argv = [...prefix, 'nft', '-f', '-'];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 8192) err += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nft exited with ${code}: ${err.trim()}`))));
    child.stdin.end(script);
  });
}
