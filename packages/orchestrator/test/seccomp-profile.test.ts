// The deny rules that stand for "not in the allowed set" (seccomp-profile.ts), evaluated with libseccomp's
// semantics (conditions of one rule AND, rules OR, unsigned 64-bit comparisons) over every value that
// matters. The runtime isolation test checks a few of them against the kernel.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ALLOWED_NETLINK_PROTOCOLS, ALLOWED_PERSONALITIES, ALLOWED_SOCKET_FAMILIES, sandboxSeccompProfile } from '../src/sandbox/seccomp-profile.js';

const profile = sandboxSeccompProfile();

function denied(name: string, args: bigint[]): boolean {
  return profile.syscalls.some(
    (r) =>
      r.names.includes(name) &&
      (r.args ?? []).every((c) => {
        const v = args[c.index] ?? 0n;
        const a = BigInt(c.value);
        switch (c.op) {
          case 'SCMP_CMP_EQ': return v === a;
          case 'SCMP_CMP_GT': return v > a;
          case 'SCMP_CMP_MASKED_EQ': return (v & a) === BigInt(c.valueTwo);
          default: throw new Error(`unexpected op ${c.op}`);
        }
      }),
  );
}

describe('seccomp profile', () => {
  it('allows exactly Docker\'s personalities', () => {
    for (const p of ALLOWED_PERSONALITIES) assert.equal(denied('personality', [BigInt(p)]), false, p.toString(16));
    const refused: bigint[] = [2n ** 32n, 2n ** 63n, 0x1_0000_0008n];
    for (let b = 0n; b < 32n; b++) {
      refused.push(1n << b, 0xffffffffn & ~(1n << b), (1n << b) | 0x20008n);
    }
    for (const v of refused) {
      if (ALLOWED_PERSONALITIES.includes(Number(v))) continue;
      assert.equal(denied('personality', [v]), true, v.toString(16));
    }
    for (let i = 0; i < 100_000; i++) {
      const v = BigInt(Math.floor(Math.random() * 2 ** 32));
      assert.equal(denied('personality', [v]), !ALLOWED_PERSONALITIES.includes(Number(v)), v.toString(16));
    }
  });

  it('allows socket families and netlink protocols only from their lists, high bits included', () => {
    for (const name of ['socket', 'socketpair']) {
      for (let f = 0n; f < 64n; f++) {
        assert.equal(denied(name, [f, 1n, 0n]), !ALLOWED_SOCKET_FAMILIES.includes(Number(f)), `${name} family ${f}`);
      }
      assert.equal(denied(name, [(1n << 32n) | 2n, 1n, 0n]), true, 'AF_INET with high bits set');
    }
    for (let p = 0n; p < 64n; p++) {
      assert.equal(denied('socket', [16n, 3n, p]), !ALLOWED_NETLINK_PROTOCOLS.includes(Number(p)), `netlink protocol ${p}`);
    }
    assert.equal(denied('socket', [2n, 1n, 9n]), false, 'the protocol rule is for netlink only');
    assert.equal(denied('socketcall', [1n]), true);
  });
});
