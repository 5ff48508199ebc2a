// The node's map from a sandbox's source address to its egress state. A live update swaps the policy object
// here (proxy and resolver read it per new connection / query) and then applies the nft script, so the
// update is in force for new connections as soon as `update` resolves.

import { applyNft, type NodePorts, renderRemoveNft, renderSandboxNft } from './nft.js';
import { type EgressPolicy } from './policy.js';
import type { SandboxEgress } from './proxy.js';
import { SandboxCa } from './ca.js';

export interface SandboxBinding {
  sandboxId: string;
  /** the sandbox's own address, as the node sees it as a source */
  ip: string;
  iface: string;
  table: string;
}

export class EgressTable {
  private readonly bySrc = new Map<string, SandboxEgress & { binding: SandboxBinding }>();

  constructor(private readonly ports: NodePorts, private readonly nftPrefix: string[] = []) {}

  readonly lookup = (srcIp: string): SandboxEgress | undefined => this.bySrc.get(srcIp);

  /**
   * Install or replace a sandbox's policy: the proxy/resolver map is swapped, then the nft table is replaced in
   * one transaction. Call it before the sandbox first runs (or resumes) so it never has a moment of open egress.
   * The CA is created once, with the first policy that has rules, and kept for the sandbox's life because its
   * certificate is already in the sandbox's trust store.
   */
  async set(binding: SandboxBinding, policy: EgressPolicy): Promise<void> {
    const prev = this.bySrc.get(binding.ip);
    const ca = policy.rules.size > 0 ? (prev?.ca ?? (await SandboxCa.create(binding.sandboxId))) : prev?.ca;
    const script = renderSandboxNft({ table: binding.table, iface: binding.iface, sandboxIp: binding.ip, policy, ports: this.ports });
    this.bySrc.set(binding.ip, { sandboxId: binding.sandboxId, policy, ca, binding });
    try {
      await applyNft(script, this.nftPrefix);
    } catch (e) {
      // The kernel kept the previous table (one transaction); the proxy side goes back to match it.
      if (prev) this.bySrc.set(binding.ip, prev);
      else this.bySrc.delete(binding.ip);
      throw e;
    }
  }

  /** The CA certificate the sandbox must trust (present once its policy has had rules). */
  caCert(ip: string): string | undefined {
    return this.bySrc.get(ip)?.ca?.certPem;
  }

  async remove(ip: string): Promise<void> {
    const e = this.bySrc.get(ip);
    if (!e) return;
    this.bySrc.delete(ip);
    await applyNft(renderRemoveNft(e.binding.table), this.nftPrefix);
  }
}
