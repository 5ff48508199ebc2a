// Node gateway link and per-slot network: the container's netns (made by crun in the sandbox's user namespace,
// bound by name at /run/netns/cove-<slot>) holding one end of a veth pair, the other end (`cvh-<slot>`) routed by
// the host: no slot is a bridge port (a bridge's 1023 ports capped a node at 1022 sandboxes), and no L2 segment is
// shared between sandboxes.
// Root inside has no CAP_NET_ADMIN (not in its bounding set), so it cannot change its address, routes or firewall.

import { rm } from 'node:fs/promises';
import { HOST_OP, run } from './run-command.js';
import type { Subnet } from './ipv4.js';

export interface NodeNetConfig {
  /**
   * The node's gateway link (`<instance>0`): a bridge without ports, holding the gateway on the node's subnet so the
   * node's egress services can listen there with no slot running, and so the subnet's unused addresses route into
   * it (dropped) rather than out of the host. (A dummy would do; some kernels, this project's CI VMs among them,
   * lack it.) Before routed veths every slot's host end was a port of this bridge.
   */
  link: string;
  subnet: Subnet;
  gateway: string;
  /** Named netns are `<netnsPrefix><slotId>`, host veth ends `<vethPrefix><slotId>` (≤ 15 chars). */
  netnsPrefix: string;
  vethPrefix: string;
}

export const netnsName = (cfg: NodeNetConfig, slotId: string): string => `${cfg.netnsPrefix}${slotId}`;
export const hostVethName = (cfg: NodeNetConfig, slotId: string): string => `${cfg.vethPrefix}${slotId}`;
const netnsPathOf = (name: string): string => `/run/netns/${name}`;
export const netnsPath = (cfg: NodeNetConfig, slotId: string): string => netnsPathOf(netnsName(cfg, slotId));

async function linkExists(name: string): Promise<boolean> {
  return (await run('ip', ['link', 'show', 'dev', name], { allowFailure: true })).code === 0;
}

/** Creates the gateway link with the gateway address; idempotent (an older Cove's bridge is that link already). */
export async function ensureGatewayLink(cfg: NodeNetConfig): Promise<void> {
  if (!(await linkExists(cfg.link))) {
    await run('ip', ['link', 'add', 'name', cfg.link, 'type', 'bridge']);
  }
  const addr = `${cfg.gateway}/${cfg.subnet.prefix}`;
  const shown = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', cfg.link]);
  if (!shown.stdout.includes(` ${addr} `)) await run('ip', ['addr', 'add', addr, 'dev', cfg.link]);
  await run('ip', ['link', 'set', 'dev', cfg.link, 'up']);
}

/** Deletes the gateway link; absent is fine. */
export async function removeGatewayLink(cfg: NodeNetConfig): Promise<void> {
  await run(HOST_OP.linkDel, [cfg.link], { allowFailure: true });
}

/** Host veths an older Cove made ports of the gateway link (migrateBridgePorts routes them). */
export async function bridgePorts(cfg: NodeNetConfig): Promise<string[]> {
  return linkNames(await run('ip', ['-o', 'link', 'show', 'master', cfg.link], { allowFailure: true }).then((r) => r.stdout));
}

/** Interface names in `ip -o link show` output (a veth's is `name@peer`). */
function linkNames(stdout: string): string[] {
  return stdout.split('\n').flatMap((line) => /^\d+: ([^@:]+)[@:]/.exec(line.trim())?.[1] ?? []);
}

/**
 * The host end of a routed slot: the gateway as a /32 with the sandbox's address as its peer. That one address
 * gives the host its /32 route to the sandbox through this veth (source: the gateway), answers the sandbox's ARP
 * for its gateway on this link whatever the host's arp_ignore, and is the address `redirect` (the slot egress
 * tables' DNS and proxy redirects) rewrites to: nft's redirect drops packets whose input interface has none.
 * No IPv6 on the host end: no link-local address, no DAD or router solicitation timers per slot.
 */
const ROUTE_HOST_END = `
ip addr add "$COVE_GATEWAY/32" peer "\${COVE_ADDRESS%/*}/32" dev "$COVE_HOST_VETH"
if [ -e "/proc/sys/net/ipv6/conf/$COVE_HOST_VETH/disable_ipv6" ]; then echo 1 > "/proc/sys/net/ipv6/conf/$COVE_HOST_VETH/disable_ipv6"; fi
`;

/**
 * Plumbs a slot's netns, given as a path (`/proc/<pid>/ns/net`): veth routed by the host, address, default route,
 * lo up, no IPv6; then binds it at /run/netns/<name> so nsenter, `ip -n` and cleanup reach it by name. One shell,
 * so boot pays one spawn. Used between `crun create` and `crun start`, and by CRIU's restore action script
 * (checkpoint/criu.ts), where it runs inside criu's restore before the tree does: every program it starts is paid
 * on every resume, so the host end is one `ip -batch` and the sandbox end another, run by one shell inside the
 * netns (it writes the netns's IPv6 sysctls itself: /proc/sys/net is the writer's netns). The veth is new each
 * time, so no neighbour entry of an earlier holder of the address (another MAC) can linger on it.
 */
export const PLUMB_SCRIPT = `
set -e
ip -batch - <<EOF
link add $COVE_HOST_VETH type veth peer name eth0 netns $NS
addr add $COVE_GATEWAY/32 peer \${COVE_ADDRESS%/*}/32 dev $COVE_HOST_VETH
link set dev $COVE_HOST_VETH up
EOF
if [ -e "/proc/sys/net/ipv6/conf/$COVE_HOST_VETH/disable_ipv6" ]; then echo 1 > "/proc/sys/net/ipv6/conf/$COVE_HOST_VETH/disable_ipv6"; fi
# The sandbox's address as a /32 and only the gateway on-link: every other destination goes through the
# gateway, so the sandbox holds one neighbour entry. With the node's /16 on-link, any process inside made one
# entry per address it sent a packet to, in the neighbour table the whole host shares (gc_thresh3,
# kernel-budgets.ts): a tenant could fill it and cut every other sandbox off.
nsenter --net="$NS" sh -ec 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; exec ip -batch -' <<EOF
addr add \${COVE_ADDRESS%/*}/32 dev eth0
link set dev lo up
link set dev eth0 up
route add $COVE_GATEWAY dev eth0 scope link
route add default via $COVE_GATEWAY
EOF
[ -d /run/netns ] || mkdir -p /run/netns
: > "/run/netns/$COVE_NETNS"
mount --bind "$NS" "/run/netns/$COVE_NETNS"
`;

/**
 * Turns one port of an older Cove's bridge into a routed slot, the sandbox running on: out of the bridge, the
 * routed host end as PLUMB_SCRIPT makes it, then the sandbox's neighbour entry for its gateway flushed (run by the
 * host in the slot's netns): it names the bridge's MAC, and the sandbox's replies would go unanswered until it
 * expired (~30 s and more); flushed, the next packet asks again and gets the veth's. The sandbox side (address,
 * routes) is the same in both designs.
 */
const MIGRATE_PORT_SCRIPT = `
set -e
ip link set dev "$COVE_HOST_VETH" nomaster
${ROUTE_HOST_END}
ip -n "$COVE_NETNS" neigh flush dev eth0
`;

const PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Environment PLUMB_SCRIPT reads (besides NS). */
export function plumbEnv(cfg: NodeNetConfig, slotId: string, address: string): Record<string, string> {
  return {
    PATH: PATH_ENV,
    COVE_HOST_VETH: hostVethName(cfg, slotId),
    COVE_ADDRESS: `${address}/${cfg.subnet.prefix}`,
    COVE_GATEWAY: cfg.gateway,
    COVE_NETNS: netnsName(cfg, slotId),
  };
}

/**
 * Plumbs the netns of the slot's container (created by crun inside the sandbox's user namespace, so
 * CRIU can checkpoint it) from the host. Root inside still cannot change address, routes or firewall:
 * CAP_NET_ADMIN is not in its bounding set.
 */
export async function plumbSlotNetwork(cfg: NodeNetConfig, slotId: string, address: string, initPid: number): Promise<void> {
  await run('sh', ['-c', PLUMB_SCRIPT], { env: { ...plumbEnv(cfg, slotId, address), NS: `/proc/${initPid}/ns/net` } });
}

/**
 * Moves the slots an older Cove plumbed into its bridge over to routed veths, running sandboxes reachable
 * throughout; the bridge stays as the (portless) gateway link. `slots` are the node's slot records: the address
 * comes from them, never from inside a sandbox's namespace. A port without a record is detached and left to orphan
 * cleanup. The firewall must already match the veths (nft-firewall.ts), so no packet passes unfiltered on the way.
 * Returns the slots migrated and those it could not move (the node starts all the same).
 */
export async function migrateBridgePorts(
  cfg: NodeNetConfig,
  slots: ReadonlyArray<{ slotId: string; address: string }>,
): Promise<{ migrated: string[]; failed: Array<{ slotId: string; err: unknown }> }> {
  const ports = new Set(await bridgePorts(cfg));
  const migrated: string[] = [];
  const failed: Array<{ slotId: string; err: unknown }> = [];
  for (const s of slots) {
    const veth = hostVethName(cfg, s.slotId);
    if (!ports.delete(veth)) continue;
    try {
      await run('sh', ['-c', MIGRATE_PORT_SCRIPT], { env: plumbEnv(cfg, s.slotId, s.address) });
      migrated.push(s.slotId);
    } catch (err) {
      // One slot's failure (its veth gone mid-way) must not keep the node from starting, nor the others from moving.
      failed.push({ slotId: s.slotId, err });
    }
  }
  for (const stray of ports) await run('ip', ['link', 'set', 'dev', stray, 'nomaster'], { allowFailure: true });
  return { migrated, failed };
}

/**
 * Deletes the slot's veth and netns; missing pieces are fine. Neither starts `ip`: the veth is one netlink request,
 * and the netns goes as `ip netns del` does it (a lazy unmount of its bind, then the file).
 */
export async function removeSlotNetwork(cfg: NodeNetConfig, slotId: string): Promise<void> {
  await removeVethAndNetns(hostVethName(cfg, slotId), netnsName(cfg, slotId));
}

/** removeSlotNetwork by names (a restore's leftovers, checkpoint/criu.ts). */
export async function removeVethAndNetns(hostVeth: string, netns: string): Promise<void> {
  await run(HOST_OP.linkDel, [hostVeth], { allowFailure: true });
  const bound = netnsPathOf(netns);
  await run(HOST_OP.umount, [bound, 'detach'], { allowFailure: true });
  await rm(bound, { force: true }).catch(() => undefined);
}

/** Slot ids that own a netns or a host veth (for orphan cleanup). */
export async function listNetworkSlotIds(cfg: NodeNetConfig): Promise<string[]> {
  const ids = new Set<string>();
  const ns = await run('ip', ['netns', 'list'], { allowFailure: true });
  for (const line of ns.stdout.split('\n')) {
    const name = line.trim().split(' ')[0] ?? '';
    const id = name.startsWith(cfg.netnsPrefix) ? name.slice(cfg.netnsPrefix.length) : '';
    if (/^[a-z0-9]+$/.test(id)) ids.add(id);
  }
  const links = await run('ip', ['-o', 'link', 'show'], { allowFailure: true });
  for (const name of linkNames(links.stdout)) {
    const id = name.startsWith(cfg.vethPrefix) ? name.slice(cfg.vethPrefix.length) : '';
    if (/^[a-z0-9]+$/.test(id)) ids.add(id);
  }
  return [...ids];
}
