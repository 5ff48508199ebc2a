// Small IPv4 arithmetic for the slot subnet (no dependency needed for /16 maths), and its next-fit allocation.

export interface Subnet {
  /** Network address as an integer. */
  base: number;
  prefix: number;
  cidr: string;
}

export function parseSubnet(cidr: string): Subnet {
  const [addr, len] = cidr.split('/');
  const prefix = Number(len);
  if (!addr || !Number.isInteger(prefix) || prefix < 8 || prefix > 29) throw new RangeError(`bad subnet ${cidr}`);
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  const base = (toInt(addr) & mask) >>> 0;
  return { base, prefix, cidr: `${toDotted(base)}/${prefix}` };
}

export function toInt(addr: string): number {
  const parts = addr.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`bad IPv4 ${addr}`);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function toDotted(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** The gateway (first host address), on the node's gateway link and every slot's host veth. */
export function gatewayOf(s: Subnet): string {
  return toDotted(s.base + 1);
}

/**
 * How long an address a slot released stays out of allocation. The edge may route straight to a sandbox's address
 * and learns of its end from node heartbeats (every 2 s, a 30 s grace for young entries, a silent node forgotten after
 * 300 s): a route that outlives its sandbox must find nothing there, never another tenant's sandbox. 10 minutes is
 * well past all of that (300 s + 32 s).
 */
export const ADDRESS_REUSE_AFTER_MS = 10 * 60_000;

/** Index of `addr` in the subnet when it is a slot address (not network, gateway or broadcast), else null. */
export function hostIndexOf(s: Subnet, addr: string): number | null {
  let n: number;
  try {
    n = toInt(addr);
  } catch {
    return null;
  }
  const i = n - s.base;
  return i >= 2 && i < 2 ** (32 - s.prefix) - 1 ? i : null;
}

/**
 * Next-fit: the first slot address after index `cursor` (the last one handed out), wrapping, that is not `used` and
 * was not released (address → ms) less than `quarantineMs` before `now`. Starting at the cursor, an address comes
 * back only once allocation has gone round the whole subnet, and usually the first one looked at is free. Null when
 * every free address is still in quarantine: refused rather than reused early (a /16 has 65 533 addresses, far more
 * than a node runs).
 */
export function nextFree(
  s: Subnet,
  used: ReadonlySet<string>,
  cursor: number,
  released: ReadonlyMap<string, number>,
  now: number,
  quarantineMs = ADDRESS_REUSE_AFTER_MS,
): string | null {
  const end = 2 ** (32 - s.prefix) - 1; // broadcast; slot addresses are 2 .. end - 1
  let i = cursor >= 2 && cursor < end ? cursor : 1;
  for (let n = 0; n < end - 2; n++) {
    i = i + 1 < end ? i + 1 : 2;
    const a = toDotted(s.base + i);
    if (used.has(a)) continue;
    const at = released.get(a);
    if (at === undefined || now - at >= quarantineMs) return a;
  }
  return null;
}

/** Next-fit allocation's state: the index of the last address handed out; released addresses → when (ms). */
export interface AllocationState {
  cursor: number;
  released: Map<string, number>;
}

/**
 * The state as an append-only log, one line per step: `c <address>` (handed out: the cursor) and `r <address> <ms>`
 * (released then). Appending a line costs the same however many releases are remembered; formatAllocation writes the
 * whole state in the same lines when the log is compacted.
 */
export function cursorLine(address: string): string {
  return `c ${address}\n`;
}

export function releaseLine(address: string, at: number): string {
  return `r ${address} ${at}\n`;
}

export function formatAllocation(s: Subnet, st: AllocationState): string {
  const cursor = st.cursor >= 2 ? cursorLine(toDotted(s.base + st.cursor)) : '';
  return cursor + [...st.released].map(([a, at]) => releaseLine(a, at)).join('');
}

/**
 * What the log says, keeping only what is usable (`dropped` says whether anything was not): garbage lines, and
 * addresses outside this subnet (it was changed), are dropped; a release time from the future (a clock set back)
 * counts from `now`, so it still ends. A later line wins over an earlier one.
 */
export function parseAllocation(s: Subnet, text: string, now: number): { cursor: number | null; released: Map<string, number>; dropped: boolean } {
  let cursor: number | null = null;
  let dropped = false;
  const released = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const c = /^c (\S+)$/.exec(line);
    const r = /^r (\S+) (\d{1,16})$/.exec(line);
    const index = hostIndexOf(s, (c ?? r)?.[1] ?? '');
    if (c && index !== null) cursor = index;
    else if (r && index !== null) released.set(toDotted(s.base + index), Math.min(Number(r[2]), now));
    else dropped = true;
  }
  return { cursor, released, dropped };
}
