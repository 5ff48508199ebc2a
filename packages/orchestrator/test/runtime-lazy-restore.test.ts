// Lazy restore (lazy-pages.ts) through SandboxRuntime.restore on a slot booted the normal way: the tree runs
// before its memory is back and gets every byte of it; the daemon lives in the slot's cgroup and ends by
// itself; no process of the sandbox keeps a userfaultfd or /dev/userfaultfd; and a daemon that dies before
// every page is in takes the tree with it (never a tree reading zeros), leaving the slot restorable again.
// Skipped when criu or the envd bundle is missing, or lazy restore is not available on this host.

import assert from 'node:assert/strict';
import { readdir, readFile, readlink, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import { lazyRestoreSupported } from '../src/checkpoint/lazy-pages.js';
import { leftovers, makeRuntime, waitFor, type TestRuntimeOptions } from './runtime-fixture.js';
import { checkpointPrereqs } from './checkpoint-fixture.js';

const OPTS: TestRuntimeOptions = { instance: 'covlzr', vethPrefix: 'lzr-', subnet: '10.207.0.0/16' };
const DATA_DIR = `/var/tmp/cove-runtime-test/${OPTS.instance}`;
const CHECKPOINTS = join(DATA_DIR, 'checkpoints');
const { criu, skip: noCriu } = await checkpointPrereqs();
const skip = noCriu || (!(await lazyRestoreSupported(criu!)) && 'lazy restore is not available on this host');
const MIB = 200;

/** A process holding MIB MiB (page i holds i & 255) that answers the sum of one byte per page. */
const HOLDER =
  `const b=Buffer.alloc(${MIB}<<20);for(let i=0;i<b.length;i+=4096)b[i]=(i>>12)&255;` +
  `require('http').createServer((q,s)=>{let x=0;for(let i=0;i<b.length;i+=4096)x+=b[i];s.end(String(x))}).listen(8000)`;
const EXPECTED = String(Array.from({ length: (MIB << 20) / 4096 }, (_, i) => i & 255).reduce((a, b) => a + b, 0));

/** pids of every process whose command line has all of `words`. */
async function processesWith(...words: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (words.every((w) => argv.includes(w))) out.push(Number(pid));
  }
  return out;
}

describe('SandboxRuntime lazy restore', { timeout: 240_000, skip }, () => {
  const rt = makeRuntime(OPTS);
  let slot: SlotInfo;
  let round = 0;
  const imageDir = () => join(CHECKPOINTS, `${slot.slotId}-${++round}`);
  const sum = async (): Promise<string | null> => {
    try {
      return await (await fetch(`http://${slot.address}:8000/`, { signal: AbortSignal.timeout(10_000) })).text();
    } catch {
      return null;
    }
  };

  before(async () => {
    process.env['COVE_CRIU_LAZY'] = '1';
    await rt.prepare();
    await mkdir(CHECKPOINTS, { recursive: true });
    slot = await rt.boot({ templateId: 'base', diskMb: 512, limits: { vcpu: 1, memoryMb: 1024 } });
    // setsid: out of crun exec's session, which CRIU would refuse.
    const r = await rt.exec(slot.slotId, ['sh', '-c', `setsid /opt/cove/bin/node -e "${HOLDER}" >/dev/null 2>&1 &`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(await waitFor(async () => (await sum()) === EXPECTED, 30_000), 'the holder answers');
  });

  after(async () => {
    delete process.env['COVE_CRIU_LAZY'];
    if (slot) await rt.destroy(slot.slotId).catch(() => undefined);
    if (slot) assert.deepEqual(await leftovers(OPTS, DATA_DIR, slot.slotId, slot.address), []);
    await rm(CHECKPOINTS, { recursive: true, force: true });
    await rt.teardownHost();
  });

  it('runs the tree before its memory is back, then has every page; the daemon ends by itself; no userfaultfd stays inside', async () => {
    const dir = imageDir();
    await rt.checkpoint(slot.slotId, dir);
    const rs = await rt.restore(slot.slotId, dir);
    assert.equal(rs.lazy, true, 'restored lazily');
    const daemon = rt.lazyPagesPid(slot.slotId);
    if (daemon !== null) {
      // Still serving: it is one of the slot's own processes (its memory is the sandbox's).
      const cg = (await readFile(`/proc/${daemon}/cgroup`, 'utf8').catch(() => '')) || 'gone';
      assert.ok(cg === 'gone' || cg.includes(`/${OPTS.instance}/${slot.slotId}`), `the daemon runs in the slot's cgroup: ${cg}`);
    }
    assert.equal(await sum(), EXPECTED, 'every page came back');
    assert.equal(await rt.lazyPagesDone(slot.slotId).then((o) => o ?? 'served'), 'served');
    assert.deepEqual(await processesWith('lazy-pages', '-W', join(DATA_DIR, 'slots', slot.slotId)), [], 'no daemon left');
    // Each restored task made its userfaultfd through criu's /dev/userfaultfd (install-criu.sh patch 6): neither
    // may stay open in the sandbox, or its processes could stall the kernel on their memory.
    const pids = (await readFile(join('/sys/fs/cgroup/pids', OPTS.instance, slot.slotId, 'cgroup.procs'), 'utf8')).split('\n').filter(Boolean);
    assert.ok(pids.length >= 3, 'tini, envd and the holder');
    for (const pid of pids) {
      for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
        const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
        assert.doesNotMatch(target, /userfaultfd/, `pid ${pid} fd ${fd} is ${target}`);
      }
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('kills the tree when the daemon dies before every page is in; the slot restores again with its memory', async (t) => {
    const dir = imageDir();
    await rt.checkpoint(slot.slotId, dir);
    const slotDir = join(DATA_DIR, 'slots', slot.slotId);
    // Kill the daemon once criu's restore has handed the tree over (the tree's pidfile names it) and before it
    // has served every page (200 MiB take it far longer than the 2 ms poll): the tree runs, pages missing. Earlier
    // would test something else: criu's restore waits on a daemon that does not answer, and a daemon that never
    // listened makes the restore a whole one.
    let killed = 0;
    // The previous restore's pidfile would read as this one's.
    await rm(join(slotDir, 'restored.pid'), { force: true });
    const saboteur = (async () => {
      // The daemon is found first: reading every process's cmdline takes long on a busy machine, long enough for the
      // daemon to serve every page and exit between the tree's hand-over and the kill (a clean run's ESRCH). Then
      // the kill follows the pidfile within a poll.
      let daemon = 0;
      const found = await waitFor(async () => {
        for (const pid of await processesWith('lazy-pages', '-W', slotDir)) {
          // criu itself, not the shell that joined the cgroups and exec'd it.
          if (!(await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => 'sh\0')).startsWith('sh\0')) daemon = pid;
        }
        return daemon > 0;
      }, 30_000, 2);
      assert.ok(found, 'the lazy-pages daemon started');
      assert.ok(await waitFor(async () => (await readFile(join(slotDir, 'restored.pid'), 'utf8').catch(() => '')) !== '', 30_000, 2));
      process.kill(daemon, 'SIGKILL');
      killed = daemon;
    })();
    // However the race ends, no tree runs on reading zeros: the daemon died during criu's restore (criu is ended
    // with it and the whole image restored: every byte there), before the resume answered (it fails, the tree
    // killed) or just after (the tree killed once the daemon's end is seen).
    const outcome = await rt.restore(slot.slotId, dir).then(
      (r) => (r.lazy ? 'resumed lazily' : 'resumed whole'),
      (e: unknown) => {
        assert.equal((e as { code?: string }).code, 'runtime_checkpoint_failed');
        return 'failed';
      },
    );
    await saboteur;
    assert.ok(killed > 0, 'the daemon was killed while it served');
    t.diagnostic(`the daemon killed: ${outcome}`);
    // A whole restore runs on with every byte; it is dumped again (which ends the tree) to go on from there.
    let images = dir;
    if (outcome === 'resumed whole') {
      assert.equal(await sum(), EXPECTED, 'the whole restore has every byte');
      images = imageDir();
      await rt.checkpoint(slot.slotId, images);
    }
    assert.equal(await waitFor(async () => !(await rt.isAlive(slot.slotId)), 10_000), true, 'the tree is not left running');
    assert.deepEqual(await processesWith('lazy-pages', '-W', slotDir), []);
    assert.ok(await waitFor(async () => (await readFile(join('/sys/fs/cgroup/pids', OPTS.instance, slot.slotId, 'cgroup.procs'), 'utf8')).trim() === '', 10_000), 'no process of the slot left');
    // Nothing was lost: the images restore (lazily again) with every byte.
    const rs = await rt.restore(slot.slotId, images);
    assert.equal(rs.lazy, true);
    assert.equal(await sum(), EXPECTED);
    assert.equal(await rt.lazyPagesDone(slot.slotId).then((o) => o ?? 'served'), 'served');
    await rm(dir, { recursive: true, force: true });
    await rm(images, { recursive: true, force: true });
  });

  /**
   * Runs `body` with COVE_CRIU naming a wrapper of the real criu that does `lazyPages` (shell) before it runs the
   * lazy-pages daemon, and with `env` set; both are put back after.
   */
  async function withCriuWrapper<T>(lazyPages: string, env: Record<string, string>, body: () => Promise<T>): Promise<T> {
    const wrapper = join(DATA_DIR, 'criu-wrapper');
    await writeFile(wrapper, `#!/bin/sh\nif [ "$1" = lazy-pages ]; then ${lazyPages}; fi\nexec ${criu} "$@"\n`, { mode: 0o755 });
    const saved = Object.fromEntries(['COVE_CRIU', ...Object.keys(env)].map((k) => [k, process.env[k]]));
    Object.assign(process.env, { COVE_CRIU: wrapper, ...env });
    try {
      return await body();
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await rm(wrapper, { force: true });
    }
  }

  it('starts criu before its daemon listens: criu waits at its connect, and the restore is lazy with every page (install-criu.sh patch 11)', async () => {
    const dir = imageDir();
    await rt.checkpoint(slot.slotId, dir);
    // The daemon held back 400 ms, far longer than criu takes to reach its connect: a criu that connects once
    // fails there, and the resume would be a whole one.
    const rs = await withCriuWrapper('sleep 0.4', { COVE_CRIU_LAZY_CONNECT_RETRIES: '1' }, () => rt.restore(slot.slotId, dir));
    assert.equal(rs.lazy, true, 'restored lazily');
    const steps = rs.steps ?? {};
    assert.equal(steps['lazyDaemonWait'], undefined, 'criu did not wait for the daemon before it started');
    assert.ok((steps['lazyDaemonReady'] ?? 0) >= 400, `the daemon listened after its hold: ${JSON.stringify(steps)}`);
    assert.ok((steps['criuPrepare'] ?? 0) + (steps['criuRestore'] ?? 0) >= (steps['lazyDaemonReady'] ?? 0), `criu ran until after the daemon listened: ${JSON.stringify(steps)}`);
    assert.equal(await sum(), EXPECTED, 'every page came back');
    assert.equal(await rt.lazyPagesDone(slot.slotId).then((o) => o ?? 'served'), 'served');
    await rm(dir, { recursive: true, force: true });
  });

  it('a daemon that never listens ends the restore at once: the whole image comes back, without waiting out criu\'s connect bound', async () => {
    const dir = imageDir();
    await rt.checkpoint(slot.slotId, dir);
    const rs = await withCriuWrapper('exit 3', { COVE_CRIU_LAZY_CONNECT_RETRIES: '1' }, () => rt.restore(slot.slotId, dir));
    assert.equal(rs.lazy, false, 'the fallback restored the whole image');
    // criu retries its connect for 10 s: ended with the daemon's failure instead, the resume is far sooner.
    assert.ok(rs.ms < 10_000, `the restore took ${rs.ms} ms`);
    assert.equal(await sum(), EXPECTED, 'every byte is there');
    assert.deepEqual(await processesWith('lazy-pages', '-W', join(DATA_DIR, 'slots', slot.slotId)), [], 'no daemon left');
    await rm(dir, { recursive: true, force: true });
  });

  it('destroy ends a daemon that still serves', async () => {
    const dir = imageDir();
    await rt.checkpoint(slot.slotId, dir);
    await rt.restore(slot.slotId, dir);
    const daemon = rt.lazyPagesPid(slot.slotId);
    const outcome = rt.lazyPagesDone(slot.slotId);
    await rt.destroy(slot.slotId);
    assert.equal(rt.lazyPagesPid(slot.slotId), null);
    if (daemon !== null) assert.ok(['served', 'failed'].includes((await outcome) ?? 'served'));
    assert.deepEqual(await processesWith('lazy-pages', '-W', join(DATA_DIR, 'slots', slot.slotId)), []);
    // A restore whose criu was ended with its daemon (the test before) leaves namespaces the kernel frees on its
    // own time, and the slot's loop device with them: waited for, never more than 10 s.
    let left: string[] = [];
    const clean = await waitFor(async () => (left = await leftovers(OPTS, DATA_DIR, slot.slotId, slot.address)).length === 0, 10_000);
    assert.ok(clean, `left behind: ${left.join(', ')}`);
    slot = undefined as unknown as SlotInfo;
    await rm(dir, { recursive: true, force: true });
  });
});
