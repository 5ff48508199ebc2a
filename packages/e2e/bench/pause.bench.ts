// Pause/resume benchmarks through the unchanged SDK (issue 5): a sandbox holding ~100 MB of resident memory is
// paused (`sbx.pause()`) and resumed (`Sandbox.connect`) on the same node, then on the other node (the origin is
// drained between pause and resume); the snapshot's size is read from the cluster storage's manifest.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Sandbox } from 'e2b';
import { deployment, type Deployment } from '../test/deployment.js';
import { holdMemory, pauseThenResume, TOUCH_ALL } from './memory-holder.js';
import { allNodesHealthy, nodeOf, setDraining } from '../test/nodes.js';
import { percentile, report } from './stats.js';

const ROUNDS = Number(process.env.COVE_BENCH_PAUSE_ROUNDS ?? 8);
/**
 * The sandbox runs this long after each resume before it is paused again, as an agent's sandbox would between
 * idle periods; it also lets the previous snapshot's commit (upload) finish instead of competing with the next
 * dump for the machine's two cores.
 */
const RUN_BETWEEN_MS = Number(process.env.COVE_BENCH_PAUSE_RUN_MS ?? 1500);
const settle = () => new Promise((r) => setTimeout(r, RUN_BETWEEN_MS));
const MIB = Number(process.env.COVE_BENCH_PAUSE_MIB ?? 100);

/** Bytes of the sandbox's committed pause snapshot (upper-dir tar + memory image), once its manifest appears. */
async function committedSnapshotBytes(d: Deployment, sandboxId: string): Promise<number> {
  const dir = join(d.storageDir, 'objects', 'snapshots');
  for (let i = 0; i < 200; i++) {
    // The directory appears with the first commit.
    const ids = statSync(dir, { throwIfNoEntry: false }) ? readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name) : [];
    for (const id of ids) {
      const file = join(dir, id, 'manifest.json');
      if (!statSync(file, { throwIfNoEntry: false })) continue;
      const m = JSON.parse(readFileSync(file, 'utf8')) as { sandboxId: string; upper: { size: number }; memory: { size: number } | null };
      if (m.sandboxId === sandboxId) return m.upper.size + (m.memory?.size ?? 0);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the pause snapshot was never committed');
}

const d = deployment();
const sbx = await Sandbox.create({ timeoutMs: 900_000 });
try {
  const rss = await holdMemory(sbx, MIB);

  const pause: number[] = [];
  const resumeSame: number[] = [];
  const resumeOther: number[] = [];
  const firstCommand: number[] = [];
  const touchAll: number[] = [];
  const touched = (await sbx.commands.run(TOUCH_ALL)).stdout.trim();
  for (let i = 0; i < ROUNDS; i++) {
    const round = await pauseThenResume(sbx);
    pause.push(round.pauseMs);
    resumeSame.push(round.resumeMs);
    // What a resumed sandbox's user waits for next: a command, then one that reads all the held memory (a lazily
    // restored sandbox may still fault those pages in).
    let t0 = performance.now();
    await sbx.commands.run('true');
    firstCommand.push(performance.now() - t0);
    t0 = performance.now();
    const sum = (await sbx.commands.run(TOUCH_ALL)).stdout.trim();
    touchAll.push(performance.now() - t0);
    if (sum !== touched) throw new Error(`the held memory came back different (${sum}, was ${touched})`);
    await settle();
  }
  if (d.nodes.length > 1) {
    for (let i = 0; i < ROUNDS; i++) {
      const origin = await nodeOf(d, sbx.sandboxId);
      if (!origin) throw new Error('the sandbox runs on no node');
      let t0 = performance.now();
      await sbx.pause();
      pause.push(performance.now() - t0);
      await setDraining(d, origin, true);
      // Measured from a committed snapshot: the other node reads it from cluster storage.
      await committedSnapshotBytes(d, sbx.sandboxId);
      try {
        t0 = performance.now();
        await Sandbox.connect(sbx.sandboxId, { timeoutMs: 900_000 });
        resumeOther.push(performance.now() - t0);
      } finally {
        await setDraining(d, origin, false);
      }
      if ((await nodeOf(d, sbx.sandboxId)) === origin) throw new Error('the resume did not move the sandbox');
      await allNodesHealthy(d);
      await settle();
    }
  }
  await sbx.pause();
  const sizeBytes = await committedSnapshotBytes(d, sbx.sandboxId);
  report(`sandbox resident memory (python RSS)`, Number(rss) / 1024, 'MiB');
  report('pause p50 (~100 MB resident)', percentile(pause, 50), 'ms', '≤ 300');
  report('pause p95', percentile(pause, 95), 'ms');
  report('resume p50, same node', percentile(resumeSame, 50), 'ms', '≤ 150');
  report('resume p95, same node', percentile(resumeSame, 95), 'ms');
  report('first command after a same-node resume p50', percentile(firstCommand, 50), 'ms');
  report('command reading all held memory after a same-node resume p50', percentile(touchAll, 50), 'ms');
  if (resumeOther.length) {
    report('resume p50, other node', percentile(resumeOther, 50), 'ms');
    report('resume p95, other node', percentile(resumeOther, 95), 'ms');
  }
  report('snapshot size in cluster storage', sizeBytes / 1048576, 'MiB');
} finally {
  await sbx.kill().catch(() => undefined);
}
