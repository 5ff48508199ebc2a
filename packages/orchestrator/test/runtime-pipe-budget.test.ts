// The kernel's per-user pipe budget (fs.pipe-user-pages-soft) is counted per host uid, and every sandbox's root
// is the same host uid: one tenant holding a few large pipes used to push that uid past the soft limit for the
// whole host. From then on every sandbox's new pipes got 2 pages instead of 16, and no pipe could be grown back
// (F_SETPIPE_SZ: EPERM) — which is what CRIU does to restore a pipe, so every resume on the node failed ("Unable
// to open fd", the sandbox stayed paused; seen in `cove bench --soak` while another deployment held ~300
// sandboxes). The node now lifts that soft limit; pipe buffers are charged to the writer's memory cgroup, which
// is the bound that holds (the last test).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { healthy, makeRuntime, waitFor, type TestRuntimeOptions } from './runtime-fixture.js';
import { checkpointPrereqs } from './checkpoint-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covtpb', vethPrefix: 'tpb-', subnet: '10.244.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const CHECKPOINTS = join(DATA_DIR, 'checkpoints');
const { skip } = await checkpointPrereqs();

/** Holds `count` pipes grown to 1 MiB each (256 pages of the uid's budget, no data in them) until killed. */
const HOLD_PIPES = (count: number) => `
import os, fcntl, time
pipes = []
grown = 0
for i in range(${count}):
    r, w = os.pipe()
    pipes.append((r, w))
    try:
        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
        grown += 1
    except OSError:
        pass
open('/tmp/pipes-held.tmp', 'w').write(str(grown))
os.replace('/tmp/pipes-held.tmp', '/tmp/pipes-held')
time.sleep(3600)
`;

/** The size a new pipe gets (F_GETPIPE_SZ). */
const NEW_PIPE_SIZE = 'import os, fcntl; r, w = os.pipe(); print(fcntl.fcntl(w, 1032))';

/** Fills 1 MiB pipes with data, one after another, writing how many are full after each. */
const FILL_PIPES = (count: number) => `
import os, fcntl
pipes = []
for i in range(${count}):
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 1 << 20)
    os.set_blocking(w, False)
    os.write(w, b'x' * (1 << 20))
    pipes.append((r, w))
    print(len(pipes), flush=True)
print('all', flush=True)
`;

describe('the per-uid pipe budget every sandbox shares', { timeout: 240_000, skip }, () => {
  const rt = makeRuntime(OPTS);
  let tenant: SlotInfo;
  let victim: SlotInfo;

  before(async () => {
    await rt.prepare();
    await mkdir(CHECKPOINTS, { recursive: true });
    [tenant, victim] = await Promise.all([
      rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 128 } }),
      rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 256 } }),
    ]);
  });

  after(async () => {
    await rm(CHECKPOINTS, { recursive: true, force: true });
    await rt.teardownHost();
  });

  it('the node lifts the soft limit at start (0 or at least every page of RAM)', () => {
    const soft = Number(readFileSync('/proc/sys/fs/pipe-user-pages-soft', 'utf8').trim());
    const ramPages = Number(/^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) / 4;
    assert.ok(soft === 0 || soft >= ramPages, `fs.pipe-user-pages-soft is ${soft}`);
  });

  it("a tenant holding 80 MiB of pipe room leaves another sandbox's pipes whole, and its resume works", async () => {
    // 80 × 256 pages = 20 480: over the kernel's default soft limit (16 384) for the uid all sandboxes share.
    await rt.exec(tenant.slotId, ['/usr/bin/python3', '-c', HOLD_PIPES(80)], { detach: true });
    let grown = -1;
    assert.ok(await waitFor(async () => {
      const r = await rt.exec(tenant.slotId, ['/bin/cat', '/tmp/pipes-held']);
      if (r.code === 0) grown = Number(r.stdout);
      return r.code === 0;
    }, 30_000), 'the tenant holding its pipes');

    const size = await rt.exec(victim.slotId, ['/usr/bin/python3', '-c', NEW_PIPE_SIZE]);
    assert.equal(size.stdout.trim(), '65536', `a new pipe in another sandbox: ${size.stdout}${size.stderr}`);

    // envd's own pipes are restored at their size by CRIU, which the exhausted budget refused.
    await rt.checkpoint(victim.slotId, join(CHECKPOINTS, `${victim.slotId}-1`));
    await rt.restore(victim.slotId, join(CHECKPOINTS, `${victim.slotId}-1`));
    assert.ok(await healthy(victim.address), 'envd answers after the resume');
    assert.equal(grown, 80, 'each of the tenant\'s own pipes grew too');
  });

  it("pipe data is charged to the writer's memory cgroup: 400 MiB of it does not fit a 128 MiB sandbox", async () => {
    const r = await rt.exec(tenant.slotId, ['/usr/bin/python3', '-c', FILL_PIPES(400)]);
    const filled = Number(r.stdout.trim().split('\n').pop() || 0);
    console.log(`filler: exit ${r.code}, ${filled} MiB in pipes; stderr: ${r.stderr.slice(-200)}`);
    // Stopped by its cgroup (the OOM killer, or the write refused), after it could fill some: not by the budget.
    assert.notEqual(r.code, 0, `the filler was not stopped: ${r.stdout}`);
    assert.ok(filled >= 32 && filled < 128, `${filled} MiB of pipe data written in a 128 MiB sandbox (exit ${r.code}: ${r.stderr.slice(-300)})`);
    assert.ok(await healthy(victim.address), 'the other sandbox is untouched');
  });
});
