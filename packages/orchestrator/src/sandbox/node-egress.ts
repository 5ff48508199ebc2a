// The node's egress services (docs/network-policy.md): one @cove/egress proxy (HTTP Host / TLS SNI) and one
// filtering DNS resolver per node, listening on the gateway address only. A slot's nft table redirects its DNS and
// TCP 80/443 here; the sandbox is told apart by its source address, which Cove's firewall pins to the slot's veth
// (a forged source is dropped as it enters, nft-firewall.ts). The services hold each bound sandbox's current
// policy; a live update swaps it and re-judges the flows already open through the proxy.

import { readFileSync } from 'node:fs';
import { DnsFilter, EgressProxy, SandboxCa, type EgressPolicy, type NodePorts, type SandboxEgress } from '@cove/egress';
import type { Logger } from 'pino';
import type { SecretVault } from './secret-vault.js';

export interface NodeEgressConfig {
  /** the node's gateway address: the only address the services listen on */
  listenHost: string;
  /** resolvers the node forwards allowed names to and resolves them with (`ip` or `ip:port`) */
  upstreamDns: string[];
  /** destinations the proxy never dials, whatever a policy or DNS answer says (the node's blocked ranges) */
  forbiddenCidrs: string[];
  logger: Logger;
  /**
   * The cluster key sandbox CAs are derived from (the artifact key: every node has it, the control plane does
   * not): a sandbox resumed on another node gets the same CA. Absent = `rules` are refused on this node.
   */
  caKey?: string;
  /** a PEM file of extra CAs trusted for upstream TLS when terminating (the e2e stand-in), read per connection */
  upstreamCaFile?: string;
  /** E2B Secret values for `${e2b.secrets.x}` placeholders, by the sandbox's team; absent = they fail closed */
  secrets?: Pick<SecretVault, 'resolve'>;
}

function hostPort(s: string): { host: string; port: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d{1,5}))?$/.exec(s);
  if (!m) throw new RangeError(`egress DNS upstream must be ip or ip:port, got ${JSON.stringify(s)}`);
  return { host: m[1]!, port: m[2] ? Number(m[2]) : 53 };
}

export class NodeEgress {
  private readonly bySrc = new Map<string, SandboxEgress>();
  private readonly cas = new Map<string, Promise<SandboxCa>>();
  private readonly proxy: EgressProxy;
  private readonly dns: DnsFilter;
  private ports: NodePorts | undefined;

  constructor(private readonly cfg: NodeEgressConfig) {
    const lookup = (src: string): SandboxEgress | undefined => this.bySrc.get(src);
    const log = cfg.logger;
    this.proxy = new EgressProxy({
      lookup,
      upstreamDns: cfg.upstreamDns,
      forbiddenCidrs: cfg.forbiddenCidrs,
      unref: true,
      ...(cfg.upstreamCaFile ? { upstreamCa: () => readUpstreamCa(cfg.upstreamCaFile!) } : {}),
      onDecision: (d) => log.debug({ egress: d }, 'egress decision'),
      // Only secrets of the sandbox's own team; workload identity tokens are not offered (they fail closed).
      resolveSecret: async (sb, kind, name) => {
        if (kind !== 'secrets' || !cfg.secrets || !sb.teamId) throw new Error('no such placeholder source');
        return cfg.secrets.resolve(sb.teamId, name);
      },
    });
    // No upstream configured: allowed names get SERVFAIL, denied ones REFUSED; nothing leaves the node.
    const upstream = cfg.upstreamDns[0] ? hostPort(cfg.upstreamDns[0]) : { host: '127.0.0.1', port: 9 };
    this.dns = new DnsFilter({ lookup, upstream, unref: true, onQuery: (q) => log.debug({ dns: q }, 'egress dns query') });
  }

  /** Listens on ephemeral ports of the gateway address (slot tables are re-rendered with them at every start). */
  async start(): Promise<NodePorts> {
    const p = await this.proxy.listen({}, this.cfg.listenHost);
    const dns = await this.dns.listen(0, this.cfg.listenHost);
    this.ports = { ...p, dns };
    this.cfg.logger.info({ ports: this.ports, upstreamDns: this.cfg.upstreamDns }, 'egress proxy and DNS filter listening');
    return this.ports;
  }

  /** The ports a slot table redirects to; undefined until started (hostname policies are refused then). */
  nodePorts(): NodePorts | undefined {
    return this.ports;
  }

  /** The ports the node's firewall must let sandboxes reach on the gateway (TCP and UDP). */
  inputPorts(): { tcp: number[]; udp: number[] } | undefined {
    const p = this.ports;
    return p ? { tcp: [p.http, p.tls, p.tunnel, p.httpToDenied, p.tlsToDenied, p.dns], udp: [p.dns] } : undefined;
  }

  policyOf(ip: string): SandboxEgress | undefined {
    return this.bySrc.get(ip);
  }

  /** Whether this node can terminate TLS for `rules` (it holds the cluster key CAs derive from). */
  canTerminate(): boolean {
    return this.cfg.caKey !== undefined;
  }

  /** The sandbox's CA (derived, so the same on every node; cached while the sandbox is here). */
  caFor(sandboxId: string): Promise<SandboxCa> {
    if (!this.cfg.caKey) return Promise.reject(new Error('this node holds no key to derive sandbox CAs from'));
    let p = this.cas.get(sandboxId);
    if (!p) {
      p = SandboxCa.derive(this.cfg.caKey, sandboxId);
      p.catch(() => this.cas.delete(sandboxId));
      this.cas.set(sandboxId, p);
    }
    return p;
  }

  /** Binds (or replaces) a sandbox's policy; returns the previous binding so a failed nft apply can restore it. */
  bind(ip: string, sandboxId: string, policy: EgressPolicy, ca?: SandboxCa, teamId?: string): SandboxEgress | undefined {
    const prev = this.bySrc.get(ip);
    this.bySrc.set(ip, { sandboxId, policy, ...(ca ? { ca } : {}), ...(teamId ? { teamId } : {}) });
    return prev;
  }

  /** Re-judges open flows from `ip` against its binding (after an update or unbind); returns how many were cut. */
  recheck(ip: string): number {
    return this.proxy.recheck(ip);
  }

  restore(ip: string, prev: SandboxEgress | undefined): void {
    if (prev) this.bySrc.set(ip, prev);
    else this.bySrc.delete(ip);
  }

  /**
   * Forgets a sandbox's policy. `cutFlows` (a destroyed sandbox) also ends what the proxy holds open for it; an
   * update to no rules at all keeps them, since nothing is denied any more.
   */
  unbind(ip: string, cutFlows: boolean): void {
    const b = this.bySrc.get(ip);
    if (b) {
      this.bySrc.delete(ip);
      this.dns.forget(b.sandboxId);
      if (cutFlows) this.cas.delete(b.sandboxId);
    }
    // Also when unbound earlier by an update to no rules: flows kept then end with the sandbox.
    if (cutFlows) this.proxy.recheck(ip);
  }

  async close(): Promise<void> {
    await Promise.all([this.proxy.close(), this.dns.close()]);
  }
}

/** Extra upstream CAs from a PEM file, or none when it cannot be read (the system store still applies). */
function readUpstreamCa(file: string): string[] | undefined {
  try {
    const pem = readFileSync(file, 'utf8');
    return pem.includes('BEGIN CERTIFICATE') ? [pem] : undefined;
  } catch {
    return undefined;
  }
}
