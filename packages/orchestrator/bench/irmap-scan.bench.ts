// What the whole-root irmap scan (COVE_CRIU_IRMAP_SCAN_ROOT, criu.ts) costs a checkpoint, on one base slot:
//  plain   an idle slot, no inotify watch: dumps alternating scan on / off (the scan only runs for a watch whose
//          file handle cannot be opened, so this should be the same).
//  watch   a watcher on /root/watched (an overlay dir outside criu's fixed hints): scan on; off, the dump fails.
//  unnamed a watch the scan cannot name (beyond PATH_MAX): the whole tree is walked, then the dump fails.
//  budget  the same plus 300 000 hard links: the scan stops at its entry bound (patch 3), then the dump fails.
//  deepBudget  instead a chain of dirs 1800 deep with 20 files at each level: the path-bytes bound stops it.
// Run: node packages/orchestrator/dist/bench/irmap-scan.bench.js [rounds] (as root, after a build). Own instance names.

import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeRuntime } from '../test/runtime-fixture.js';

const rounds = Number(process.argv[2] ?? 5);
const dataDir = '/var/tmp/cove-runtime-test/covirb';
const rt = makeRuntime({ instance: 'covirb', vethPrefix: 'irb-', subnet: '10.203.0.0/16' });
await rt.prepare();
await rt.cleanupOrphans([]);
const images = join(dataDir, 'checkpoints');
await mkdir(images, { recursive: true });

const WATCHER = String.raw`
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
for c in sys.argv[1].split('/'):
    os.chdir(c or '/')
if libc.inotify_add_watch(fd, sys.argv[2].encode(), 0x100) < 0:
    sys.exit('watch failed')
os.chdir('/')
open(sys.argv[3], 'w').write('watching\n')
os.read(fd, 65536)
`;
const comp = (i: number) => `${'d'.repeat(197)}${String(i).padStart(3, '0')}`;
const DEEP = `/deep/${Array.from({ length: 21 }, (_, i) => comp(i)).join('/')}`;

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;
const slot = await rt.boot({ templateId: 'base', diskMb: 1024, limits: { vcpu: 1, memoryMb: 512 } });
const sh = async (cmd: string, input?: string) => {
  const r = await rt.exec(slot.slotId, ['/bin/sh', '-c', cmd], { input });
  if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`);
  return r.stdout.trim();
};
const watch = async (dir: string, name: string, log: string) => {
  await sh(`setsid python3 /tmp/watch.py '${dir}' '${name}' ${log} >/dev/null 2>&1 &`);
  for (let i = 0; i < 300 && !(await rt.exec(slot.slotId, ['/bin/cat', log])).stdout.startsWith('watching'); i++) await new Promise((r) => setTimeout(r, 50));
  return sh(`pgrep -f 'watch.py ${dir.slice(0, 20)}' | head -1`);
};
let n = 0;
/** One dump (then a restore when it succeeded): its ms, or the ms until it failed. */
async function dump(scan: boolean): Promise<{ ok: boolean; ms: number; why?: string }> {
  process.env['COVE_CRIU_IRMAP_SCAN_ROOT'] = scan ? '1' : '0';
  const dir = join(images, String(++n));
  const t0 = Date.now();
  try {
    const cp = await rt.checkpoint(slot.slotId, dir);
    await rt.restore(slot.slotId, dir);
    return { ok: true, ms: cp.ms };
  } catch (err) {
    // criu's own words for the failure (the log line that says why), to tell the bound from a miss.
    const why = /Scan budget exhausted|Can't dump that handle/.exec((err as Error).message)?.[0] ?? (err as Error).message.slice(0, 200);
    return { ok: false, ms: Date.now() - t0, why };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
async function series(scan: boolean): Promise<{ ok: boolean; why?: string; p50: number; raw: number[] }> {
  await dump(scan); // warms the page cache (and criu's kernel-feature cache)
  const r: { ok: boolean; ms: number; why?: string }[] = [];
  for (let i = 0; i < rounds; i++) r.push(await dump(scan));
  return { ok: r.every((x) => x.ok), why: r.find((x) => x.why)?.why, p50: p50(r.map((x) => x.ms)), raw: r.map((x) => x.ms) };
}

const out: Record<string, unknown> = { rounds };
try {
  await sh('cat > /tmp/watch.py', WATCHER);
  out['treeEntries'] = Number(await sh('find / -xdev 2>/dev/null | wc -l'));
  const plainOn: number[] = [];
  const plainOff: number[] = [];
  await dump(true);
  await dump(false);
  for (let i = 0; i < rounds; i++) (plainOn.push((await dump(true)).ms), plainOff.push((await dump(false)).ms));
  out['plain'] = { scanOnMs: p50(plainOn), scanOffMs: p50(plainOff), raw: { on: plainOn, off: plainOff } };

  await sh('mkdir -p /root/watched');
  const w = await watch('/root', 'watched', '/tmp/w.log');
  out['watch'] = { scanOn: await series(true), scanOff: await series(false) };
  await sh(`kill ${w}`);

  await sh(`python3 -c "import os, sys
os.chdir('/')
for c in sys.argv[1].strip('/').split('/') + ['w']:
    os.mkdir(c); os.chdir(c)" '${DEEP}'`);
  await watch(DEEP, 'w', '/tmp/deep.log');
  out['unnamed'] = await series(true);
  await sh(`python3 -c "import os
os.makedirs('/root/many')
for f in range(6):
    open('/root/many/f%d' % f, 'w').close()
    for i in range(50000):
        os.link('/root/many/f%d' % f, '/root/many/l%d-%d' % (f, i))"`);
  out['budget'] = await series(true);
  // The costliest tree under the bound: each entry is looked up from the root, so deep paths cost the most per
  // entry; the 32 MiB path budget caps the sum of their lengths (a chain 1800 deep, 20 files at each level).
  await sh(`rm -rf /root/many; python3 -c "import os
os.chdir('/'); os.mkdir('chain'); os.chdir('chain')
for d in range(1800):
    for f in range(20):
        open('f%d' % f, 'w').close()
    os.mkdir('a'); os.chdir('a')"`);
  out['deepBudget'] = await series(true);
} finally {
  await rt.destroy(slot.slotId);
  await rm(images, { recursive: true, force: true });
  await rt.teardownHost();
}
console.log(JSON.stringify(out, null, 2));
// Figures for `cove bench` (packages/cli/src/bench.ts reads these lines).
const fig = (name: string, value: number, extra: Record<string, unknown> = {}) =>
  console.log(`BENCH_RESULT ${JSON.stringify({ name, value, unit: 'ms', ...extra })}`);
const plain = out['plain'] as { scanOnMs: number; scanOffMs: number };
fig('criu dump, idle slot, whole-root scan on (p50)', plain.scanOnMs, { baseline: plain.scanOffMs, baselineLabel: 'scan off' });
fig('criu dump, one inotify watch found by the whole-root scan (p50)', (out['watch'] as { scanOn: { p50: number } }).scanOn.p50);
fig('criu dump refused at the scan budget, deepest tree (p50)', (out['deepBudget'] as { p50: number }).p50);
