// A memory checkpoint stays restorable on its node after the host's node binary changes: the runtime keeps a
// readable copy of every build it lent (lent-files.ts), a checkpoint records the build its tree ran, and a restore
// maps that build while new slots run the new one. Without it, CRIU refused the restore (criu mem.c "Can't open
// vma": another size), and the sandbox could never run again.

import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { healthy, leftovers, makeRuntime, type TestRuntimeOptions } from './runtime-fixture.js';
import { checkpointPrereqs, writeLaterNodeBuild } from './checkpoint-fixture.js';

const WORK = '/var/tmp/cove-runtime-test/node-build';
const LATER_NODE = join(WORK, 'node-later');
const O: TestRuntimeOptions = { instance: 'covtnx', vethPrefix: 'tnx-', subnet: '10.226.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${O.instance}`;
const { skip } = await checkpointPrereqs();

describe('a checkpoint across a change of the host node binary', { timeout: 240_000, skip }, () => {
  // One node, before and after its node binary changed: the same data dir, another runtime object.
  const before_ = makeRuntime(O);
  const after_ = makeRuntime({ ...O, nodeBinary: LATER_NODE });
  const limits = { vcpu: 1, memoryMb: 256 };

  before(async () => {
    await rm(WORK, { recursive: true, force: true });
    await mkdir(WORK, { recursive: true });
    await writeLaterNodeBuild(LATER_NODE);
  });

  after(async () => {
    await after_.teardownHost();
    await rm(WORK, { recursive: true, force: true });
  });

  it('restores the tree with the build it ran, and boots new slots with the new one', async () => {
    await before_.prepare();
    const slot = await before_.boot({ templateId: 'base', diskMb: 256, limits });
    const ran = (await before_.record(slot.slotId))!.builds;
    assert.ok(ran, 'the record names the builds its tree runs');
    const images = join(WORK, 'images');
    await before_.checkpoint(slot.slotId, images);
    const upper = join(WORK, 'upper.tar');
    await before_.exportUpper(slot.slotId, upper);
    await before_.destroy(slot.slotId);

    await after_.prepare();
    const restored = await after_.restoreSnapshot({ templateId: 'base', diskMb: 256, limits, upperTar: upper, imageDir: images, initToken: slot.initToken });
    assert.ok(await healthy(restored.address), 'envd answers after the restore');
    const rec = (await after_.record(restored.slotId))!;
    assert.deepEqual(rec.builds, ran, 'the restored tree runs the build it was dumped with');
    assert.equal((await stat(`/proc/${rec.pid}/exe`)).size, (await stat(process.execPath)).size);

    const fresh = await after_.boot({ templateId: 'base', diskMb: 256, limits });
    const freshRec = (await after_.record(fresh.slotId))!;
    assert.notEqual(freshRec.builds!.node, ran.node, 'a new slot runs the new build');
    assert.equal((await stat(`/proc/${freshRec.pid}/exe`)).size, (await stat(LATER_NODE)).size);
    // Both builds are kept while a slot runs each.
    const kept = await readdir(join(DATA_DIR, 'bin-restore'));
    for (const k of [ran.node, freshRec.builds!.node]) assert.ok(kept.includes(k), `build ${k} kept`);

    for (const s of [restored, fresh]) {
      await after_.destroy(s.slotId);
      assert.deepEqual(await leftovers(O, DATA_DIR, s.slotId, s.address), []);
    }
  });

  it('takes only a key of its own copies from the images: anything else there selects the current build', async () => {
    const slot = await after_.boot({ templateId: 'base', diskMb: 256, limits });
    const current = (await after_.record(slot.slotId))!.builds;
    const images = join(WORK, 'images-tampered');
    await after_.checkpoint(slot.slotId, images);
    const upper = join(WORK, 'upper-tampered.tar');
    await after_.exportUpper(slot.slotId, upper);
    await after_.destroy(slot.slotId);
    const file = join(images, 'cove-checkpoint.json');
    const manifest = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    manifest['builds'] = { node: '../../../../../../usr/bin', init: 42 };
    await writeFile(file, JSON.stringify(manifest));
    const restored = await after_.restoreSnapshot({ templateId: 'base', diskMb: 256, limits, upperTar: upper, imageDir: images, initToken: slot.initToken });
    assert.ok(await healthy(restored.address));
    assert.deepEqual((await after_.record(restored.slotId))!.builds, current);
    await after_.destroy(restored.slotId);
    assert.deepEqual(await leftovers(O, DATA_DIR, restored.slotId, restored.address), []);
  });
});
