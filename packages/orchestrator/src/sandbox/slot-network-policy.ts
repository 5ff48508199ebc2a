// What a slot may reach, on the host: the internet allow-set of the node's firewall (nft-firewall.ts), the slot's
// own egress filter (an nft table per slot, slot-egress.ts), the node's egress proxy and DNS filter that hostname
// rules need (node-egress.ts), and the sandbox's trust of its egress CA. The runtime calls it at each step of a
// slot's life; every change passes only through states no more open than the one it leaves and the one it enters.

import type { Logger } from 'pino';
import { allowInternet, applyFirewall, blockedCidrs, denyInternet, type FirewallConfig } from './nft-firewall.js';
import type { Subnet } from './ipv4.js';
import { NodeEgress } from './node-egress.js';
import type { SecretVault } from './secret-vault.js';
import { applySlotEgress, egressTableOf, hasEgressRules, listSlotEgressTables, removeSlotEgress, type EgressRules, type SlotEgressTarget } from './slot-egress.js';
import { hostVethName, type NodeNetConfig } from './slot-network.js';
import type { SlotRecord } from './slot-store.js';
import { installSandboxCa, SANDBOX_CA_FILE } from './slot-trust-store.js';

export interface SlotNetworkPolicyOptions {
  /** The runtime instance: names the firewall's table and the slots' egress tables. */
  instance: string;
  net: NodeNetConfig;
  subnet: Subnet;
  idOffset: number;
  /** The slot's rootfs on the host (where its trust stores are). */
  rootfsOf: (slotId: string) => string;
  log: Logger;
  /** The egress services' own logger. */
  egressLog: Logger;
  /** Resolvers the egress services forward allowed names to; default the host's. */
  egressDns?: string[] | undefined;
  egressCaKey?: string | undefined;
  egressUpstreamCaFile?: string | undefined;
  egressSecrets?: SecretVault | undefined;
}

/** The part of a slot's record its policy is made of. */
type PolicyOf = Pick<SlotRecord, 'slotId' | 'address' | 'sandboxId' | 'allowInternetAccess' | 'egress'>;

export class SlotNetworkPolicy {
  /** The node's egress proxy and DNS filter (hostname rules); started once, by start(). */
  private egress: NodeEgress | undefined;

  constructor(private readonly o: SlotNetworkPolicyOptions) {}

  /**
   * The node's egress services listen on the gateway (the gateway link must exist); the firewall lets sandboxes reach
   * their ports there and nothing else of the host.
   */
  async start(firewall: FirewallConfig): Promise<void> {
    if (this.egress) return;
    const egress = new NodeEgress({
      listenHost: this.o.net.gateway,
      upstreamDns: this.o.egressDns ?? firewall.dnsServers,
      // What sandboxes may never reach directly, the proxy never dials for them either.
      forbiddenCidrs: [...blockedCidrs(firewall), this.o.subnet.cidr],
      logger: this.o.egressLog,
      ...(this.o.egressCaKey ? { caKey: this.o.egressCaKey } : {}),
      ...(this.o.egressUpstreamCaFile ? { upstreamCaFile: this.o.egressUpstreamCaFile } : {}),
      ...(this.o.egressSecrets ? { secrets: this.o.egressSecrets } : {}),
    });
    await egress.start();
    firewall.egressInput = { gateway: this.o.net.gateway, ...egress.inputPorts()! };
    this.egress = egress;
  }

  /**
   * A restarted node: each recorded slot's filter back before its address rejoins the internet set (a slot whose
   * filter cannot be applied stays without egress rather than unfiltered), and the tables of slots that no longer
   * exist removed (they would filter whichever slot gets their address next).
   */
  async restore(firewall: FirewallConfig, records: readonly SlotRecord[]): Promise<void> {
    const filtered = new Set(records.filter((r) => hasEgressRules(r.egress)).map((r) => r.slotId));
    for (const id of await listSlotEgressTables(this.o.instance)) {
      if (filtered.has(id)) continue;
      await removeSlotEgress(undefined, this.tableOf(id), undefined);
      this.o.log.info({ slotId: id }, 'removed a stale egress table');
    }
    const unfiltered = new Set<string>();
    for (const r of records) {
      if (!hasEgressRules(r.egress)) continue;
      try {
        await applySlotEgress(this.egress, this.targetOf(r), r.egress);
      } catch (err) {
        unfiltered.add(r.slotId);
        this.o.log.error({ err, slotId: r.slotId, sandboxId: r.sandboxId }, 'cannot re-apply the slot\'s egress filter: it keeps no egress');
      }
    }
    await applyFirewall(firewall, records.filter((r) => r.allowInternetAccess && !unfiltered.has(r.slotId)).map((r) => r.address));
  }

  /**
   * A claim's filter, before the slot can join the internet set (claimInternet): it never has a moment of unfiltered
   * egress. A failure fails the claim, never leaves an open sandbox.
   */
  async claimFilter(rec: PolicyOf, sandboxId: string, egress: EgressRules): Promise<void> {
    if (!hasEgressRules(egress) && !hasEgressRules(rec.egress)) return;
    await applySlotEgress(this.egress, this.targetOf({ ...rec, sandboxId }), egress);
    await this.installCa(rec.slotId, sandboxId, egress);
  }

  /** A claim's internet access (a slot boots without): only a change needs the firewall. */
  async claimInternet(rec: PolicyOf, allowInternetAccess: boolean): Promise<void> {
    if (allowInternetAccess === rec.allowInternetAccess) return;
    await (allowInternetAccess ? allowInternet(this.o.instance, rec.address) : denyInternet(this.o.instance, rec.address));
  }

  /** A running sandbox's new policy: closing goes first and opening last. */
  async update(rec: PolicyOf, allowInternetAccess: boolean, egress: EgressRules): Promise<void> {
    if (!allowInternetAccess && rec.allowInternetAccess) await denyInternet(this.o.instance, rec.address);
    // The CA is trusted before the proxy starts terminating the sandbox's TLS with it.
    await this.installCa(rec.slotId, rec.sandboxId ?? rec.slotId, egress);
    await applySlotEgress(this.egress, this.targetOf(rec), egress);
    if (allowInternetAccess && !rec.allowInternetAccess) await allowInternet(this.o.instance, rec.address);
  }

  /** A slot going away: out of the internet set, its filter removed (also a table left by a slot without a record). */
  async remove(slotId: string, address: string | undefined): Promise<void> {
    if (address) await denyInternet(this.o.instance, address);
    await removeSlotEgress(this.egress, this.tableOf(slotId), address).catch((err: unknown) => this.o.log.warn({ err, slotId }, 'cannot remove the slot\'s egress table'));
  }

  /** Every egress table of this instance (the node's teardown). */
  async removeAll(): Promise<void> {
    for (const id of await listSlotEgressTables(this.o.instance)) await removeSlotEgress(undefined, this.tableOf(id), undefined);
  }

  /**
   * With `rules`, the sandbox's trust stores get its egress CA (the certificate only) before any flow of it can
   * reach the proxy's TLS termination. A failure fails the claim or update: TLS to a rules host would fail anyway.
   */
  private async installCa(slotId: string, sandboxId: string, egress: EgressRules): Promise<void> {
    if (!egress.rules?.length || !this.egress) return;
    const ca = await this.egress.caFor(sandboxId);
    const bundles = await installSandboxCa(this.o.rootfsOf(slotId), this.o.idOffset, ca.certPem);
    if (!bundles.length) this.o.log.warn({ slotId, sandboxId }, 'no system CA bundle in the sandbox: only ' + SANDBOX_CA_FILE + ' holds the egress CA');
  }

  private tableOf(slotId: string): string {
    return egressTableOf(this.o.instance, slotId);
  }

  private targetOf(r: Pick<PolicyOf, 'slotId' | 'address' | 'sandboxId'>): SlotEgressTarget {
    return { table: this.tableOf(r.slotId), iface: hostVethName(this.o.net, r.slotId), sandboxIp: r.address, sandboxId: r.sandboxId ?? r.slotId };
  }
}
