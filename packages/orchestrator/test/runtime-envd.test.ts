// Boots a slot with its default first process, envd from packages/envd/dist/bundle (bound read-only at
// /opt/cove/envd and run by the host's node binary). Skipped until the envd bundle has been built.

import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
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
});
