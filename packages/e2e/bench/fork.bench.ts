// Fork benchmarks through the unchanged SDK (issue 13): a sandbox holding ~100 MB of resident memory is forked into
// one copy and into five (`sbx.fork({count})`, timed until the SDK has every copy), with a same-run baseline: a
// pause and a resume on the same node of that same sandbox (`sbx.pause()` + `Sandbox.connect`). Copies are killed
// between rounds (not timed).
import { Sandbox } from 'e2b';
import { deployment } from '../test/deployment.js';
import { holdMemory, pauseThenResume } from './memory-holder.js';
import { percentile, report } from './stats.js';

const ROUNDS = Number(process.env.COVE_BENCH_FORK_ROUNDS ?? 6);
const MIB = Number(process.env.COVE_BENCH_FORK_MIB ?? 100);
/** Lets the previous round's background work (snapshot deletion, commits) finish instead of competing for two cores. */
const RUN_BETWEEN_MS = Number(process.env.COVE_BENCH_FORK_RUN_MS ?? 1500);
const settle = () => new Promise((r) => setTimeout(r, RUN_BETWEEN_MS));

async function forkOnce(sbx: Sandbox, count: number): Promise<number> {
  const t0 = performance.now();
  const results = await sbx.fork({ count, timeoutMs: 120_000 });
  const ms = performance.now() - t0;
  const failed = results.filter((r) => !(r instanceof Sandbox));
  await Promise.all(results.map((r) => (r instanceof Sandbox ? r.kill().catch(() => undefined) : undefined)));
  if (failed.length) throw new Error(`fork of ${count}: ${failed.length} copies failed: ${failed.map(String).join('; ')}`);
  return ms;
}

deployment();
const sbx = await Sandbox.create({ timeoutMs: 900_000 });
try {
  const rss = await holdMemory(sbx, MIB);

  const pause: number[] = [];
  const resume: number[] = [];
  const one: number[] = [];
  const five: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const round = await pauseThenResume(sbx);
    pause.push(round.pauseMs);
    resume.push(round.resumeMs);
    await settle();
    one.push(await forkOnce(sbx, 1));
    await settle();
    five.push(await forkOnce(sbx, 5));
    await settle();
  }
  report('fork source resident memory (python RSS)', Number(rss) / 1024, 'MiB');
  report('fork, 1 copy p50 (~100 MB resident)', percentile(one, 50), 'ms', '≤ 500');
  report('fork, 1 copy p95', percentile(one, 95), 'ms');
  report('fork, 5 copies p50', percentile(five, 50), 'ms');
  report('fork, 5 copies p95', percentile(five, 95), 'ms');
  report('baseline: pause p50 (same sandbox, same run)', percentile(pause, 50), 'ms');
  report('baseline: pause p95', percentile(pause, 95), 'ms');
  report('baseline: resume p50, same node', percentile(resume, 50), 'ms');
  report('baseline: resume p95, same node', percentile(resume, 95), 'ms');
} finally {
  await sbx.kill().catch(() => undefined);
}
