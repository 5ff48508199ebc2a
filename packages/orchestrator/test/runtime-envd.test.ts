// Boots a slot with its default first process, envd from packages/envd/dist/bundle (bound read-only at
// /opt/cove/envd and run by the host's node binary). Skipped until the envd bundle has been built.

import assert from 'node:assert/strict';
import { access, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { leftovers, makeRuntime, PACKAGE_DIR, type TestRuntimeOptions } from './runtime-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covetestv', vethPrefix: 'ctv-', subnet: '10.235.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const bundle = join(PACKAGE_DIR, '..', 'envd', 'dist', 'bundle', 'envd.cjs');
const haveBundle = await access(bundle).then(() => true, () => false);

describe('envd as the first process', { timeout: 120_000, skip: haveBundle ? false : `no envd bundle at ${bundle}` }, () => {
  const rt = makeRuntime(OPTS);
  let slot: SlotInfo | undefined;

  after(async () => {
    if (slot) {
      await rt.destroy(slot.slotId);
      assert.deepEqual(await leftovers(OPTS, DATA_DIR, slot.slotId, slot.address), []);
    }
    await rt.teardownHost();
  });

  it('boots envd and answers /health with its version', async () => {
    await rt.prepare();
    slot = await rt.boot({ templateId: 'base', diskMb: 256, limits: { vcpu: 1, memoryMb: 256 } });
    const res = await fetch(`http://${slot.address}:49983/health`);
    assert.equal(res.status, 204);
    assert.ok(res.headers.get('x-envd-version'));
    const init = await fetch(`http://${slot.address}:49983/init`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    await init.body?.cancel();
    assert.ok(init.status === 401 || init.status === 403, `/init without the init token answered ${init.status}`);
  });

  it("runs envd's node with the mmap-hints library from a sealed memfd: V8's pages packed, no descriptor left open", async () => {
    assert.ok(slot);
    const { pid } = (await rt.record(slot.slotId))!;
    const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
    assert.match(maps, /\/memfd:cove-mmap-hints \(deleted\)$/m);
    // Without the library, V8 scatters its heap pages over ~200 separate GiB of address space.
    const gib = new Set(maps.trim().split('\n').map((l) => BigInt(`0x${l.slice(0, l.indexOf('-'))}`) >> 30n));
    assert.ok(gib.size <= 8, `envd's mappings span ${gib.size} separate GiB`);
    const fds = await readdir(`/proc/${pid}/fd`);
    const targets = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
    assert.deepEqual(targets.filter((t) => t.includes('memfd')), []);
  });
});
