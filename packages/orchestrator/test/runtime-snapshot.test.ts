// SandboxRuntime.restoreSnapshot: a slot checkpointed by one runtime (its own data dir, cgroup parent, bridge
// and subnet — another node, as far as the runtime can tell) is rebuilt by a second runtime from the
// checkpoint's image dir and the exported writable layer: processes, memory, cwd, env, files written and the
// listening http server are back at the new slot's address; exec and destroy work on it, though the second runtime
// has a later build of the envd bundle (a paused envd maps no file of it). A corrupt image fails cleanly without
// leftovers. Skipped only when criu or the envd bundle is missing.

import assert from 'node:assert/strict';
import { appendFile, cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { SandboxRuntimeError } from '../src/sandbox/runtime-errors.js';
import { ENVD_BOOT, ENVD_ENTRY } from '@cove/contracts/sandbox';
import { ENVD_BUNDLE_DIR, healthy, leftovers, makeRuntime, waitFor, type TestRuntimeOptions } from './runtime-fixture.js';
import { checkpointPrereqs, hogScript, readCounter } from './checkpoint-fixture.js';

const WORK = '/var/tmp/cove-runtime-test/snapshot-transfer';
/** The second node's envd bundle: a later build, every file of it that a running envd loads changed. */
const LATER_BUNDLE = join(WORK, 'envd-later');
const A: TestRuntimeOptions = { instance: 'covts1', vethPrefix: 'ts1-', subnet: '10.212.0.0/16' };
const B: TestRuntimeOptions = { instance: 'covts2', vethPrefix: 'ts2-', subnet: '10.213.0.0/16', envdDir: LATER_BUNDLE };
const { skip } = await checkpointPrereqs();

describe('SandboxRuntime.restoreSnapshot on another runtime', { timeout: 240_000, skip }, () => {
  const rtA = makeRuntime(A);
  const rtB = makeRuntime(B);
  let slot: SlotInfo;
  let restored: SlotInfo;
  const limits = { vcpu: 1, memoryMb: 512 };

  before(async () => {
    await rm(WORK, { recursive: true, force: true });
    await mkdir(WORK, { recursive: true });
    await cp(ENVD_BUNDLE_DIR, LATER_BUNDLE, { recursive: true });
    await appendFile(join(LATER_BUNDLE, ENVD_ENTRY), '\n// a later build\n');
    // Another size: CRIU would refuse a restore that mapped it from the dumping node's build.
    await appendFile(join(LATER_BUNDLE, ENVD_BOOT), Buffer.alloc(4096));
    await Promise.all([rtA.prepare(), rtB.prepare()]);
    slot = await rtA.boot({ templateId: 'base', diskMb: 512, limits });
  });

  after(async () => {
    await rm(WORK, { recursive: true, force: true });
    await Promise.all([rtA.teardownHost(), rtB.teardownHost()]);
  });

  it('moves a running slot: memory, files, cwd, env and the http server come back on the other runtime', async () => {
    const w = await rtA.exec(slot.slotId, ['/bin/sh', '-c', 'mkdir -p /tmp/www /home/user/work && cat > /tmp/hog.py && echo kept > /home/user/work/note'], { input: hogScript(30) });
    assert.equal(w.code, 0, w.stderr);
    const s = await rtA.exec(
      slot.slotId,
      ['setsid', '/bin/sh', '-c', 'cd /home/user/work && HOG_MARK=moved python3 /tmp/hog.py >/dev/null 2>&1 & python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp/www >/dev/null 2>&1 &'],
      { detach: true },
    );
    assert.equal(s.code, 0, s.stderr);
    assert.ok(await waitFor(async () => ((await readCounter(slot.address))?.n ?? 0) > 5, 20_000), 'http server and counter up');
    const before = (await readCounter(slot.address))!;

    const envdA = (await rtA.record(slot.slotId))!.envdDir;
    const images = join(WORK, 'images-a');
    const cpr = await rtA.checkpoint(slot.slotId, images);
    const upper = join(WORK, 'upper.tar');
    await rtA.exportUpper(slot.slotId, upper);
    await rtA.destroy(slot.slotId);
    // What another node would have after fetching the artifacts: copies, the origin's files gone.
    const imagesB = join(WORK, 'images-b');
    await cp(images, imagesB, { recursive: true });
    await rm(images, { recursive: true });

    const started = Date.now();
    restored = await rtB.restoreSnapshot({ templateId: 'base', diskMb: 512, limits, upperTar: upper, imageDir: imagesB, initToken: slot.initToken });
    const ms = Date.now() - started;
    assert.notEqual(restored.slotId, slot.slotId);
    assert.match(restored.address, /^10\.213\./);
    assert.ok(await healthy(restored.address), 'envd answers at the new address');
    const first = await readCounter(restored.address);
    assert.ok(first, 'the http server answers at the new address');
    assert.ok(first.n >= before.n, `counter continues (${before.n} → ${first.n})`);
    assert.equal(first.cwd, '/home/user/work');
    assert.equal(first.mark, 'moved');
    assert.ok(await waitFor(async () => ((await readCounter(restored.address))?.n ?? 0) > first.n + 10, 10_000), 'counter keeps counting');
    assert.equal((await readCounter(restored.address))!.digest, before.digest, 'the 30 MB buffer is intact');
    const note = await rtB.exec(restored.slotId, ['cat', '/home/user/work/note']);
    assert.equal(note.stdout.trim(), 'kept', 'a file written before the checkpoint is in the writable layer');
    assert.equal(await rtB.isAlive(restored.slotId), true);
    const recB = (await rtB.record(restored.slotId))!;
    assert.notEqual(recB.envdDir, envdA, 'the second runtime mounts its own, later envd install');
    // envd's memory-saving library came back from the images (a memfd), not from either node's bundle.
    assert.match(await readFile(`/proc/${recB.pid}/maps`, 'utf8'), /\/memfd:cove-mmap-hints/);
    console.log(`cross-runtime move: checkpoint ${cpr.ms} ms (image ${(cpr.imageBytes / 1048576).toFixed(1)} MiB), restore ${ms} ms`);
  });

  it('claims, destroys and leaves nothing of the moved slot', async () => {
    await rtB.claim(restored.slotId, { sandboxId: 'imovedsandbox', limits, allowInternetAccess: false });
    const h = await rtB.exec(restored.slotId, ['hostname']);
    assert.equal(h.stdout.trim(), 'imovedsandbox');
    await rtB.destroy(restored.slotId);
    assert.deepEqual(await leftovers(B, `/var/tmp/cove-runtime-test/${B.instance}`, restored.slotId, restored.address), []);
  });

  it('fails cleanly on a corrupt image and leaves no slot behind', async () => {
    const slot2 = await rtA.boot({ templateId: 'base', diskMb: 256, limits });
    const images = join(WORK, 'images-c');
    await rtA.checkpoint(slot2.slotId, images);
    const upper = join(WORK, 'upper-c.tar');
    await rtA.exportUpper(slot2.slotId, upper);
    await rtA.destroy(slot2.slotId);
    await writeFile(join(images, 'pstree.img'), 'garbage');
    const beforeSlots = (await rtB.listRecords()).length;
    await assert.rejects(
      rtB.restoreSnapshot({ templateId: 'base', diskMb: 256, limits, upperTar: upper, imageDir: images, initToken: slot2.initToken }),
      (e: unknown) => e instanceof SandboxRuntimeError && e.code === 'runtime_checkpoint_failed',
    );
    assert.equal((await rtB.listRecords()).length, beforeSlots);
  });
});
