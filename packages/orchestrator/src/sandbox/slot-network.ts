// Node bridge and per-slot network: the container's netns (made by crun in the sandbox's user namespace,
// bound by name at /run/netns/cove-<slot>) holding one end of a veth pair, the other end (`cvh-<slot>`)
// an isolated port of the bridge. Root inside has no CAP_NET_ADMIN (not in its bounding set), so it
// cannot change its address, routes or firewall.

import { run } from './run-command.js';
import type { Subnet } from './ipv4.js';

export interface BridgeConfig {
  bridge: string;
  subnet: Subnet;
  gateway: string;
  /** Named netns are `<netnsPrefix><slotId>`, host veth ends `<vethPrefix><slotId>` (≤ 15 chars). */
  netnsPrefix: string;
  vethPrefix: string;
}

export const netnsName = (cfg: BridgeConfig, slotId: string): string => `${cfg.netnsPrefix}${slotId}`;
export const hostVethName = (cfg: BridgeConfig, slotId: string): string => `${cfg.vethPrefix}${slotId}`;
export const netnsPath = (cfg: BridgeConfig, slotId: string): string => `/run/netns/${netnsName(cfg, slotId)}`;

async function linkExists(name: string): Promise<boolean> {
  return (await run('ip', ['link', 'show', 'dev', name], { allowFailure: true })).code === 0;
}

/** Creates the bridge with the gateway address; idempotent. */
export async function ensureBridge(cfg: BridgeConfig): Promise<void> {
  if (!(await linkExists(cfg.bridge))) {
    await run('ip', ['link', 'add', 'name', cfg.bridge, 'type', 'bridge']);
  }
  const addr = `${cfg.gateway}/${cfg.subnet.prefix}`;
  const shown = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', cfg.bridge]);
  if (!shown.stdout.includes(` ${addr} `)) await run('ip', ['addr', 'add', addr, 'dev', cfg.bridge]);
  await run('ip', ['link', 'set', 'dev', cfg.bridge, 'up']);
}

/** Deletes the bridge; absent is fine. */
export async function removeBridge(cfg: BridgeConfig): Promise<void> {
  await run('ip', ['link', 'del', 'dev', cfg.bridge], { allowFailure: true });
}

/**
 * Plumbs a slot's netns, given as a path (`/proc/<pid>/ns/net`): veth into the bridge as an isolated
 * port, address, default route, lo up, no IPv6; then binds it at /run/netns/<name> so nsenter, `ip -n`
 * and cleanup reach it by name. One shell, so boot pays one spawn. Used between `crun create` and
 * `crun start`, and by CRIU's restore action script (checkpoint/criu.ts).
 */
export const PLUMB_SCRIPT = `
set -e
# A reused address comes with a new MAC: drop the host's neighbour entry for it, which otherwise stays
# REACHABLE for ~30 s after the previous slot went away and leaves the new one unreachable.
ip neigh flush to "\${COVE_ADDRESS%/*}" dev "$COVE_BRIDGE" || true
ip link add "$COVE_HOST_VETH" type veth peer name eth0 netns "$NS"
ip link set dev "$COVE_HOST_VETH" master "$COVE_BRIDGE"
# Isolated ports only forward to non-isolated ones (the bridge itself): no sandbox-to-sandbox L2 path.
bridge link set dev "$COVE_HOST_VETH" isolated on
ip link set dev "$COVE_HOST_VETH" up
# The sandbox's address as a /32 and only the gateway on-link: every other destination goes through the
# gateway, so the sandbox holds one neighbour entry. With the node's /16 on-link, any process inside made one
# entry per address it sent a packet to, in the neighbour table the whole host shares (gc_thresh3,
# kernel-budgets.ts): a tenant could fill it and cut every other sandbox off.
nsenter --net="$NS" sh -ec 'sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip addr add "\${COVE_ADDRESS%/*}/32" dev eth0; ip link set dev lo up; ip link set dev eth0 up
ip route add "$COVE_GATEWAY" dev eth0 scope link
ip route add default via "$COVE_GATEWAY"'
mkdir -p /run/netns
touch "/run/netns/$COVE_NETNS"
mount --bind "$NS" "/run/netns/$COVE_NETNS"
`;

/** Environment PLUMB_SCRIPT reads (besides NS). */
export function plumbEnv(cfg: BridgeConfig, slotId: string, address: string): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    COVE_HOST_VETH: hostVethName(cfg, slotId),
    COVE_BRIDGE: cfg.bridge,
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
export async function plumbSlotNetwork(cfg: BridgeConfig, slotId: string, address: string, initPid: number): Promise<void> {
  await run('sh', ['-c', PLUMB_SCRIPT], { env: { ...plumbEnv(cfg, slotId, address), NS: `/proc/${initPid}/ns/net` } });
}

/** Deletes the slot's veth and netns; missing pieces are fine. */
export async function removeSlotNetwork(cfg: BridgeConfig, slotId: string): Promise<void> {
  await run('ip', ['link', 'del', 'dev', hostVethName(cfg, slotId)], { allowFailure: true });
  await run('ip', ['netns', 'del', netnsName(cfg, slotId)], { allowFailure: true });
}

/** Slot ids that own a netns or a host veth (for orphan cleanup). */
export async function listNetworkSlotIds(cfg: BridgeConfig): Promise<string[]> {
  const ids = new Set<string>();
  const ns = await run('ip', ['netns', 'list'], { allowFailure: true });
  for (const line of ns.stdout.split('\n')) {
    const name = line.trim().split(' ')[0] ?? '';
    const id = name.startsWith(cfg.netnsPrefix) ? name.slice(cfg.netnsPrefix.length) : '';
    if (/^[a-z0-9]+$/.test(id)) ids.add(id);
  }
  const links = await run('ip', ['-o', 'link', 'show'], { allowFailure: true });
  for (const line of links.stdout.split('\n')) {
    const name = /^\d+: ([^@:]+)[@:]/.exec(line.trim())?.[1] ?? '';
    const id = name.startsWith(cfg.vethPrefix) ? name.slice(cfg.vethPrefix.length) : '';
    if (/^[a-z0-9]+$/.test(id)) ids.add(id);
  }
  return [...ids];
}
