// Small IPv4 arithmetic for the slot subnet (no dependency needed for /16 maths).

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

/** Lowest address of the subnet not in `used`, skipping network, gateway and broadcast. */
export function firstFree(s: Subnet, used: ReadonlySet<string>): string | null {
  const size = 2 ** (32 - s.prefix);
  for (let i = 2; i < size - 1; i++) {
    const a = toDotted(s.base + i);
    if (!used.has(a)) return a;
  }
  return null;
}
