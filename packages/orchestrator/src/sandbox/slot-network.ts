// Node bridge and per-slot network: a named netns `cove-<slot>` holding one end of a veth pair, the
// other end (`cvh-<slot>`) an isolated port of the bridge. The netns is created by the host before the
// sandbox's user namespace exists, so root inside has no CAP_NET_ADMIN over it and cannot change its
// address, routes or firewall.

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

/** Creates netns + veth for a slot and configures the inside (address, default route, lo up, no IPv6). */
export async function createSlotNetwork(cfg: BridgeConfig, slotId: string, address: string): Promise<void> {
  const ns = netnsName(cfg, slotId);
  const host = hostVethName(cfg, slotId);
  // A reused address comes with a new MAC: drop the host's neighbour entry for it, which otherwise stays
  // REACHABLE for ~30 s after the previous slot went away and leaves the new one unreachable.
  await run('ip', ['neigh', 'flush', 'to', address, 'dev', cfg.bridge], { allowFailure: true });
  await run('ip', ['netns', 'add', ns]);
  await run('ip', ['link', 'add', 'name', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  await run('ip', ['link', 'set', 'dev', host, 'master', cfg.bridge]);
  // Isolated ports only forward to non-isolated ones (the bridge itself): no sandbox↔sandbox L2 path.
  await run('bridge', ['link', 'set', 'dev', host, 'isolated', 'on']);
  await run('ip', ['link', 'set', 'dev', host, 'up']);
  await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  await run('ip', ['-n', ns, 'addr', 'add', `${address}/${cfg.subnet.prefix}`, 'dev', 'eth0']);
  await run('ip', ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
  await run('ip', ['-n', ns, 'link', 'set', 'dev', 'eth0', 'up']);
  await run('ip', ['-n', ns, 'route', 'add', 'default', 'via', cfg.gateway]);
}

/**
 * Mounts a sysfs instance belonging to the slot's netns at `target` (on the host), for the sandbox's
 * read-only /sys: the sandbox cannot mount one itself (no CAP_SYS_ADMIN over a netns the host made),
 * and the host's own sysfs would list the host's network interfaces.
 */
export async function mountSlotSysfs(cfg: BridgeConfig, slotId: string, target: string): Promise<void> {
  await run('nsenter', [`--net=${netnsPath(cfg, slotId)}`, '--', 'mount', '-t', 'sysfs', '-o', 'ro,nosuid,nodev,noexec', 'sysfs', target]);
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
