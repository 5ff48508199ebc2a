// Crash recovery and leak-free teardown: a new runtime over the same data dir (what a restarted
// orchestrator builds) finds the slots that still run, and cleans up dead and half-made ones.

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { SlotInfo } from '../src/sandbox/runtime.js';
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
});
