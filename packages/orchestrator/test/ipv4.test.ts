// Slot address allocation: next-fit from a cursor, a released address kept out for ADDRESS_REUSE_AFTER_MS, and the
// state a restarted node reads back.

import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ADDRESS_REUSE_AFTER_MS, cursorLine, formatAllocation, hostIndexOf, nextFree, parseAllocation, parseSubnet, releaseLine } from '../src/sandbox/ipv4.js';
import { ADDRESSES_FILE, SlotStore } from '../src/sandbox/slot-store.js';

// 10.9.0.0/29: network .0, gateway .1, slot addresses .2 to .6, broadcast .7.
const S = parseSubnet('10.9.0.0/29');
const NOW = 1_000_000_000;
const none = new Set<string>();
const noneReleased = new Map<string, number>();
const ip = (last: number) => `10.9.0.${last}`;

describe('nextFree', () => {
  it('hands out the address after the cursor, not the lowest free one', () => {
    assert.equal(nextFree(S, none, 2, noneReleased, NOW), ip(3));
    assert.equal(nextFree(S, none, 4, noneReleased, NOW), ip(5));
  });

  it('wraps past the broadcast address to the first slot address, never the network or gateway', () => {
    assert.equal(nextFree(S, none, 6, noneReleased, NOW), ip(2));
    // A cursor that is not a slot address (none yet, or out of range) starts at the first one.
    for (const c of [0, 1, 7, 1000, -5]) assert.equal(nextFree(S, none, c, noneReleased, NOW), ip(2), `cursor ${c}`);
  });

  it('skips used and recently released addresses, and takes one released long enough ago', () => {
    const used = new Set([ip(4), ip(6)]);
    const released = new Map([[ip(5), NOW - 1000], [ip(2), NOW - ADDRESS_REUSE_AFTER_MS]]);
    assert.equal(nextFree(S, used, 3, released, NOW), ip(2));
    released.set(ip(2), NOW - ADDRESS_REUSE_AFTER_MS + 1);
    assert.equal(nextFree(S, used, 3, released, NOW), ip(3), 'the cursor itself comes last');
  });

  it('refuses when every free address is still in quarantine, and when none is free', () => {
    const used = new Set([ip(2), ip(3), ip(4)]);
    const released = new Map([[ip(5), NOW - 1], [ip(6), NOW - ADDRESS_REUSE_AFTER_MS + 1]]);
    assert.equal(nextFree(S, used, 2, released, NOW), null);
    assert.equal(nextFree(S, new Set([ip(2), ip(3), ip(4), ip(5), ip(6)]), 2, noneReleased, NOW), null);
    assert.equal(nextFree(S, used, 2, released, NOW + ADDRESS_REUSE_AFTER_MS), ip(5), 'free again once the time is up');
  });

  it('goes round a /16 before an address comes back, when nothing else holds it', () => {
    const s = parseSubnet('10.231.0.0/16');
    const used = new Set<string>();
    let cursor = 1;
    const seen = new Set<string>();
    for (let n = 0; n < 65_533; n++) {
      const a = nextFree(s, used, cursor, noneReleased, NOW)!;
      assert.ok(!seen.has(a), `${a} handed out twice within one round`);
      seen.add(a);
      cursor = hostIndexOf(s, a)!;
    }
    assert.ok(!seen.has('10.231.0.0') && !seen.has('10.231.0.1') && !seen.has('10.231.255.255'));
    assert.equal(nextFree(s, used, cursor, noneReleased, NOW), '10.231.0.2', 'then it starts again');
  });
});

describe('hostIndexOf', () => {
  it('is the index of a slot address of the subnet, null for anything else', () => {
    assert.equal(hostIndexOf(S, ip(2)), 2);
    assert.equal(hostIndexOf(S, ip(6)), 6);
    for (const bad of [ip(0), ip(1), ip(7), '10.9.0.8', '10.9.1.2', '', 'garbage', '10.9.0', '10.9.0.2.1', '10.9.0.300']) {
      assert.equal(hostIndexOf(S, bad), null, JSON.stringify(bad));
    }
  });
});

describe('the saved allocation state', () => {
  it('reads back what it wrote', () => {
    const st = { cursor: 5, released: new Map([[ip(3), NOW - 5]]) };
    assert.deepEqual(parseAllocation(S, formatAllocation(S, st), NOW), { ...st, dropped: false });
    const none = { cursor: 1, released: new Map<string, number>() };
    assert.deepEqual(parseAllocation(S, formatAllocation(S, none), NOW), { cursor: null, released: none.released, dropped: false }, 'no cursor yet');
  });

  it('drops what it cannot use, and keeps the rest', () => {
    for (const text of ['garbage', '\u0000\u0001', '[]', '{"cursor":"10.9.0.3"}', 'c', 'c 10.9.0.1', 'c 10.9.1.3', 'c 10.9.0.255', 'r 10.9.0.3', 'r 10.9.0.3 soon', 'r 10.9.0.3 -5', 'x 10.9.0.3 5']) {
      const got = parseAllocation(S, text, NOW);
      assert.equal(got.cursor, null, JSON.stringify(text));
      assert.equal(got.released.size, 0, JSON.stringify(text));
      assert.equal(got.dropped, true, JSON.stringify(text));
    }
    assert.deepEqual(parseAllocation(S, '', NOW), { cursor: null, released: new Map(), dropped: false }, 'an empty log');
    const log = [`c ${ip(9)}`, `r ${ip(2)} ${NOW - 1}`, 'half a li', `c ${ip(4)}`, `r ${ip(7)} 12x`, `r ${ip(5)} ${NOW + 60_000}`, `r ${ip(2)} ${NOW - 2}`, ''].join('\n');
    const got = parseAllocation(S, log, NOW);
    assert.equal(got.cursor, 4, 'the last cursor line wins');
    assert.deepEqual([...got.released], [[ip(2), NOW - 2], [ip(5), NOW]], 'the later release wins; one in the future counts from now');
    assert.equal(got.dropped, true);
    assert.deepEqual(parseAllocation(S, cursorLine(ip(6)) + releaseLine(ip(3), NOW - 9), NOW), { cursor: 6, released: new Map([[ip(3), NOW - 9]]), dropped: false });
  });
});

describe('the slot store\'s address file', () => {
  it('reads back what it wrote and appended, null when there is none, and is never taken for a slot', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cove-addresses-'));
    try {
      const store = new SlotStore(join(dir, 'slots'));
      assert.equal(await store.readAddresses(), null);
      await store.appendAddresses('c 10.231.4.7\n');
      await store.appendAddresses('r 10.231.4.7 5\n');
      assert.equal(await store.readAddresses(), 'c 10.231.4.7\nr 10.231.4.7 5\n');
      await store.writeAddresses('c 10.231.4.8\n');
      assert.equal(await store.readAddresses(), 'c 10.231.4.8\n');
      assert.deepEqual(await readdir(join(dir, 'slots')), [ADDRESSES_FILE], 'no temporary file left');
      assert.deepEqual(await store.listIds(), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
