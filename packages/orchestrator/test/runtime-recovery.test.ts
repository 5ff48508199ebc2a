// Crash recovery and leak-free teardown: a new runtime over the same data dir (what a restarted
// orchestrator builds) finds the slots that still run, and cleans up dead and half-made ones.

import assert from 'node:assert/strict';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { hostIndexOf, parseSubnet } from '../src/sandbox/ipv4.js';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { ADDRESSES_FILE } from '../src/sandbox/slot-store.js';
import { healthy, leftovers, makeRuntime, sh, STAND_IN, waitFor, type TestRuntimeOptions } from './runtime-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covetestr', vethPrefix: 'ctr-', subnet: '10.233.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const BOOT = { templateId: 'base', diskMb: 64, limits: { vcpu: 0.5, memoryMb: 64 }, process: STAND_IN };

describe('runtime recovery', { timeout: 180_000 }, () => {
  const made: SlotInfo[] = [];

  after(async () => {
    const rt = makeRuntime(OPTS);
    await rt.teardownHost();
    for (const s of made) assert.deepEqual(await leftovers(OPTS, DATA_DIR, s.slotId, s.address), []);
  });

  it('finds running slots after the runtime object is thrown away, and cleans the rest', async () => {
    const first = makeRuntime(OPTS);
    await first.prepare();
    await first.cleanupOrphans([]);
    const survivor = await first.boot(BOOT);
    const dying = await first.boot(BOOT);
    const halfMade = await first.boot(BOOT);
    made.push(survivor, dying, halfMade);
    await first.claim(survivor.slotId, { sandboxId: 'sbx-survivor', limits: { vcpu: 1, memoryMb: 128 }, allowInternetAccess: true });
    // "Crash": drop the object without any teardown; kill one slot's first process from outside;
    // make another look like a boot that never finished.
    process.kill(dying.pid, 'SIGKILL');
    const recFile = join(DATA_DIR, 'slots', halfMade.slotId, 'slot.json');
    const rec = JSON.parse(await readFile(recFile, 'utf8')) as { state: string };
    rec.state = 'booting';
    await writeFile(recFile, JSON.stringify(rec));

    const second = makeRuntime(OPTS);
    await second.prepare(); // a restarted orchestrator prepares again; running slots must not notice
    assert.ok(await waitFor(async () => !(await second.isAlive(dying.slotId)), 10_000));
    const listed = await second.listSlots();
    assert.deepEqual(listed.map((s) => s.slotId), [survivor.slotId]);
    assert.deepEqual(listed[0], survivor);
    assert.ok(await second.isAlive(survivor.slotId));
    assert.ok(await healthy(survivor.address));
    // The egress allow-set was rebuilt from the records, so the claimed slot keeps its internet.
    const set = await sh('nft', ['list', 'set', 'inet', OPTS.instance, 'internet']);
    assert.match(set.stdout, new RegExp(survivor.address.replace(/\./g, '\\.')));

    const cleaned = await second.cleanupOrphans(listed.map((s) => s.slotId));
    assert.deepEqual(cleaned.sort(), [dying.slotId, halfMade.slotId].sort());
    for (const s of [dying, halfMade]) assert.deepEqual(await leftovers(OPTS, DATA_DIR, s.slotId, s.address), []);
    assert.ok(await healthy(survivor.address), 'cleanup must not touch kept slots');

    await second.destroy(survivor.slotId);
    await second.destroy(survivor.slotId); // idempotent
    assert.deepEqual(await leftovers(OPTS, DATA_DIR, survivor.slotId, survivor.address), []);
    assert.deepEqual(await second.listSlots(), []);
  });

  it('does not give a destroyed slot\'s address to the next slot, nor after a restart', async () => {
    const index = (s: SlotInfo) => hostIndexOf(parseSubnet(OPTS.subnet), s.address)!;
    const stateFile = join(DATA_DIR, 'slots', ADDRESSES_FILE);
    const first = makeRuntime(OPTS);
    await first.prepare();
    const a = await first.boot(BOOT);
    made.push(a);
    await first.destroy(a.slotId);
    const b = await first.boot(BOOT);
    made.push(b);
    assert.notEqual(b.address, a.address, 'the address just released is not handed out again');
    await first.destroy(b.slotId);

    // A restarted node (nothing in memory) goes on after the saved cursor.
    const second = makeRuntime(OPTS);
    await second.prepare();
    const c = await second.boot(BOOT);
    made.push(c);
    assert.equal(index(c), index(b) + 1, `after ${b.address}: ${c.address}`);

    // As after a round of the subnet: the cursor just before B, released a moment ago (saved), and the node restarted.
    assert.match(await readFile(stateFile, 'utf8'), new RegExp(`^r ${b.address.replace(/\./g, '\\.')} \\d+$`, 'm'), 'the release is saved');
    await appendFile(stateFile, `c ${a.address}\n`);
    const third = makeRuntime(OPTS);
    const d = await third.boot(BOOT);
    made.push(d);
    assert.equal(index(d), index(c) + 1, `past ${b.address} (released) and ${c.address} (in use): ${d.address}`);

    // A state file that cannot be read is ignored: allocation goes on after the highest address in use.
    await writeFile(stateFile, 'garbage\n');
    const fourth = makeRuntime(OPTS);
    const e = await fourth.boot(BOOT);
    made.push(e);
    assert.equal(index(e), index(d) + 1, `after ${d.address}: ${e.address}`);
    for (const s of [c, d, e]) await fourth.destroy(s.slotId);
  });

  it('routes the slots an older version left on the node bridge, their sandboxes reachable right away', async () => {
    const first = makeRuntime(OPTS);
    await first.prepare();
    const old = await first.boot(BOOT);
    made.push(old);
    await first.claim(old.slotId, { sandboxId: 'sbx-old', limits: { vcpu: 1, memoryMb: 128 }, allowInternetAccess: true });
    // Lay the slot out as the bridge design did: the host end an isolated port of `<instance>0` (which holds the
    // gateway on the subnet), no address or route of its own; the sandbox side is the same in both designs.
    const link = `${OPTS.instance}0`;
    const veth = `${OPTS.vethPrefix}${old.slotId}`;
    const ns = `${OPTS.instance}-${old.slotId}`;
    // A bridge takes its lowest port's MAC unless it was given one: with this one port it would answer with the veth's
    // own, and a stale entry for it would work after the move, hiding a missing flush. A node's bridge with many
    // ports answered with one MAC that is not most veths'; this one gets a MAC of its own to stand for that.
    const bridgeMac = '02:00:5e:c0:7e:01';
    for (const args of [['link', 'set', 'dev', link, 'address', bridgeMac], ['addr', 'flush', 'dev', veth], ['link', 'set', 'dev', veth, 'master', link], ['link', 'set', 'dev', veth, 'type', 'bridge_slave', 'isolated', 'on'], ['-n', ns, 'neigh', 'flush', 'dev', 'eth0']]) {
      const r = await sh('ip', args);
      assert.equal(r.code, 0, `ip ${args.join(' ')}: ${r.stderr}`);
    }
    assert.ok(await healthy(old.address), 'reachable through the bridge');
    assert.equal((await readFile(`/sys/class/net/${link}/address`, 'utf8')).trim(), bridgeMac);
    assert.match((await sh('ip', ['-n', ns, 'neigh', 'show', 'dev', 'eth0'])).stdout, new RegExp(bridgeMac), 'the sandbox learnt its gateway as the bridge');

    const second = makeRuntime(OPTS);
    await second.prepare();
    assert.equal((await sh('ip', ['-o', 'link', 'show', 'master', link])).stdout.trim(), '', 'the bridge has no ports left');
    assert.match((await sh('ip', ['-4', 'route', 'show', 'exact', `${old.address}/32`])).stdout, new RegExp(`dev ${veth} .*src ${second.gateway}`));
    // Its neighbour entry for the gateway, if it has one yet, names the routed host end's MAC, not the bridge's,
    // which no interface answers to now: a stale one would leave the sandbox's replies unanswered until it expired
    // (~30 s and more). The migration flushes it; an ARP request from the routed host end also corrects it (on this
    // kernel the entry came back right with the flush left out). Before the bridge had a MAC of its own here, the
    // veth's was the bridge's, and that ARP made the old "not the bridge's MAC" check fail one run in seven.
    const vethMac = (await readFile(`/sys/class/net/${veth}/address`, 'utf8')).trim();
    const macs = [...(await sh('ip', ['-n', ns, 'neigh', 'show', 'dev', 'eth0'])).stdout.matchAll(/lladdr (\S+)/g)].map((m) => m[1]);
    assert.ok(macs.every((m) => m === vethMac), `the sandbox's neighbours name ${macs.join(', ')}; the host end is ${vethMac}`);
    const out = await second.exec(old.slotId, ['/bin/sh', '-c', "curl -sS -m 10 -o /dev/null -w '%{http_code}' http://deb.debian.org/debian/"]);
    assert.equal(out.stdout, '200', `sandbox → internet right after the restart: ${out.stderr}`);
    assert.ok(await healthy(old.address), 'host → sandbox after the restart');
    await second.destroy(old.slotId);
    assert.deepEqual(await leftovers(OPTS, DATA_DIR, old.slotId, old.address), []);
  });
});
