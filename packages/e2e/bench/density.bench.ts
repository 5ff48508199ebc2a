// `cove bench --density` (issue 14): how many idle `base` sandboxes one node holds, what each costs the host, and
// which limit stops the node first. Against a one-node deployment `cove bench --density` starts with the placement
// knobs opened (memory overcommit as asked, CPU and count caps out of the way: see packages/cli/src/main.ts), this
// creates sandboxes through the unchanged SDK in steady batches until a create fails, `COVE_DENSITY_MAX` is held,
// `COVE_DENSITY_MINUTES` have passed, or the host's MemAvailable would fall under `COVE_DENSITY_MEM_FLOOR_MIB` (the
// machine is shared: that is the bench's cap, never the node's ceiling). Then, idle: host memory per sandbox
// (MemAvailable's drop / count; one sandbox's PSS beside it), what each piece costs (its processes, the kernel's
// meminfo deltas, its memory cgroup), each candidate limit used against its ceiling and the count at which it
// would run out at the measured rate; the first of those is the node's ceiling. Then everything is killed and the
// node's objects must be back where they started (host-census.ts), as the soak checks.
// It holds the machine: the plain `cove bench` leaves it out (packages/cli/src/bench.ts DENSITY_BENCH).
import { Sandbox } from 'e2b';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENVD_MOUNT, ENVD_START } from '@cove/contracts/sandbox';
import { deployment } from '../test/deployment.js';
import { hostCensus, processes, type Count } from './host-census.js';
import { cpuByGroup, cpuOver, limitCensus, meminfo, sandboxProcesses, type LimitUse, type NodeNames } from './node-limits.js';
import { percentile } from './stats.js';
import { nodes, poolsSettled } from './warm-pools.js';

const MAX = Number(process.env.COVE_DENSITY_MAX ?? 1100);
const BATCH = Number(process.env.COVE_DENSITY_BATCH ?? 10);
const MINUTES = Number(process.env.COVE_DENSITY_MINUTES ?? 7);
const MEM_FLOOR_MIB = Number(process.env.COVE_DENSITY_MEM_FLOOR_MIB ?? 6144);
/** Teardown and the warm pool's refill finish in the background: host objects must be back within this. */
const SETTLE_MS = 180_000;
const MiB = 1024;

const say = (l: string) => process.stdout.write(`${l}\n`);
function emit(name: string, value: number, unit: string, extra: { target?: string; baseline?: number; baselineLabel?: string } = {}): void {
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name, value, unit, ...extra })}\n`);
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** MemAvailable once it stops moving (page cache and slab settle after a burst): two samples 2 s apart within 16 MiB. */
async function settledMemAvailable(): Promise<number> {
  let last = meminfo().MemAvailable!;
  for (let i = 0; i < 30; i++) {
    await sleep(2000);
    const now = meminfo().MemAvailable!;
    if (Math.abs(now - last) < 16 * MiB) return now;
    last = now;
  }
  return last;
}

const d = deployment();
const topo = JSON.parse(readFileSync(join(d.stateDir, 'topology.json'), 'utf8')) as {
  nodes: Array<{ nodeId: string; dataDir: string; runtime: { instance: string; bridge: string; vethPrefix: string; subnet: string } }>;
};
if (topo.nodes.length !== 1) throw new Error(`the density bench wants a one-node deployment (this one has ${topo.nodes.length})`);
const rt = topo.nodes[0]!.runtime;
const orchestratorPid = processes(d.stateDir).get('orchestrator');
if (!orchestratorPid) throw new Error('no orchestrator pid file in the deployment');
const names: NodeNames = { ...rt, orchestratorPid, sandboxRootUid: 100_000, dataDir: topo.nodes[0]!.dataDir };

await poolsSettled();
const hostBefore = hostCensus(d.stateDir);
const limitsBefore = limitCensus(names);
const memBefore = meminfo();
const availBefore = await settledMemAvailable();
const capacity = (await nodes())[0]?.info?.capacity;
say(`density: up to ${MAX} sandboxes in batches of ${BATCH}, ${MINUTES} min, MemAvailable floor ${MEM_FLOOR_MIB} MiB; MemAvailable ${Math.round(availBefore / MiB)} MiB`);

const held: Sandbox[] = [];
const createMs: number[] = [];
let stop = '';
let failure: { status?: number; name?: string; message: string } | undefined;
const t0 = Date.now();
while (!stop) {
  const perSandbox = held.length > 0 ? Math.max(0, (availBefore - meminfo().MemAvailable!) / held.length) : 32 * MiB;
  if (held.length >= MAX) stop = `the bench's cap: --max ${MAX}`;
  else if (Date.now() - t0 > MINUTES * 60_000) stop = `the bench's cap: ${MINUTES} minutes`;
  else if (meminfo().MemAvailable! - perSandbox * BATCH * 2 < MEM_FLOOR_MIB * MiB) stop = `the bench's cap: MemAvailable floor ${MEM_FLOOR_MIB} MiB (shared machine)`;
  if (stop) break;
  const n = Math.min(BATCH, MAX - held.length);
  const got = await Promise.allSettled(
    Array.from({ length: n }, async () => {
      const s = performance.now();
      const sbx = await Sandbox.create({ timeoutMs: 3_600_000 });
      createMs.push(performance.now() - s);
      return sbx;
    }),
  );
  for (const g of got) {
    if (g.status === 'fulfilled') held.push(g.value);
    else if (!failure) {
      const e = g.reason as Error & { status?: number };
      failure = { message: e.message, name: e.name, ...(e.status ? { status: e.status } : {}) };
    }
  }
  if (failure) stop = `a create failed: ${failure.name ?? 'Error'}${failure.status ? ` ${failure.status}` : ''}: ${failure.message.slice(0, 300)}`;
  if (held.length % 100 < BATCH) say(`density: ${held.length} held, ${Math.round((Date.now() - t0) / 1000)} s, MemAvailable ${Math.round(meminfo().MemAvailable! / MiB)} MiB`);
}
const fillSeconds = (Date.now() - t0) / 1000;
say(`density: stopped at ${held.length}: ${stop}`);

// Idle: nothing created any more, the pool refilled (unless a limit keeps it from refilling: then a bounded
// wait, the figures taken as they are), memory settled.
const poolsFull = await Promise.race([poolsSettled().then(() => true, () => false), sleep(60_000).then(() => false)]);
if (!poolsFull) say('density: the warm pool did not refill within 60 s (the limit that stopped the creates holds it too)');
const availAfter = await settledMemAvailable();
const memAfter = meminfo();
const count = held.length;
const perSandboxMiB = (availBefore - availAfter) / count / MiB;

// One sandbox's own processes (its pid namespace, named from inside; envd's reply is bounded and checked).
const probe = held[Math.floor(count / 2)]!;
const ns = (await probe.commands.run('readlink /proc/self/ns/pid')).stdout.trim();
if (!/^pid:\[\d{1,20}\]$/.test(ns)) throw new Error(`sandbox ${probe.sandboxId} named no pid namespace`);
// Idle again: the readlink command has exited, so only the sandbox's resident processes are counted.
await sleep(1000);
const procs = sandboxProcesses(ns);
const pssMiB = procs.reduce((a, p) => a + p.pssKiB, 0) / MiB;
const cpu = await cpuOver(10_000, orchestratorPid);
// Who spends the idle CPU: the sandboxes' envds and tinis, each deployment process, everything else on the host.
const byPid = new Map([...processes(d.stateDir)].map(([name, pid]) => [pid, name]));
const cpuGroups = await cpuByGroup(20_000, (pid, cmd) =>
  byPid.get(pid) ?? (cmd.includes(`${ENVD_MOUNT}/${ENVD_START}`) ? 'envd (all sandboxes)' : cmd.startsWith('/opt/cove/bin/tini') ? 'tini (all sandboxes)' : 'everything else (other users of the machine, this bench)'),
);
const limitsAfter = limitCensus(names);
const memCg = (() => {
  try {
    return Number(readFileSync(`/sys/fs/cgroup/memory/${rt.instance}/memory.usage_in_bytes`, 'utf8')) / 1024 / 1024;
  } catch {
    return NaN;
  }
})();

emit('density sandboxes held', count, 'count', { target: '≥ 1500' });
emit('density fill time', fillSeconds, 's');
emit('density Sandbox.create p50 while filling', percentile(createMs, 50), 'ms');
emit('density Sandbox.create p95 while filling', percentile(createMs, 95), 'ms');
emit('density host memory per sandbox (MemAvailable drop / count)', perSandboxMiB, 'MiB', { target: '≤ 12', baseline: pssMiB, baselineLabel: 'PSS of one sandbox’s processes' });
emit('density MemAvailable after', availAfter / MiB, 'MiB', { baseline: availBefore / MiB, baselineLabel: 'before' });
// The pieces: user memory of the sandbox's processes, and where the kernel's share went (per sandbox).
for (const p of procs) emit(`density one sandbox: ${p.comm} PSS`, p.pssKiB / MiB, 'MiB', { baseline: p.rssKiB / MiB, baselineLabel: 'RSS' });
for (const p of procs) emit(`density one sandbox: ${p.comm} threads`, p.threads, 'count');
for (const k of ['AnonPages', 'Shmem', 'Cached', 'Slab', 'SUnreclaim', 'KernelStack', 'PageTables', 'Percpu']) {
  if (memAfter[k] === undefined) continue;
  emit(`density per sandbox: meminfo ${k} growth`, (memAfter[k]! - memBefore[k]!) / count / MiB, 'MiB');
}
emit("density per sandbox: the node's sandbox memory cgroups", memCg / (count + 0), 'MiB');
emit('density idle host CPU', cpu.host, '% of a core', { baseline: cpu.process, baselineLabel: "the orchestrator's share" });
for (const [group, pct] of [...cpuGroups.groups].sort((x, y) => y[1] - x[1])) emit(`density idle CPU: ${group}`, pct, '% of a core', { baseline: cpuGroups.host, baselineLabel: 'whole host, same 20 s' });

// Each limit: used after against its ceiling, the rate per sandbox, and the count where it runs out at that rate.
const before = new Map(limitsBefore.map((l) => [l.key, l]));
const ceilings: Array<{ key: string; at: number; of: string }> = [];
const table: string[] = [];
for (const l of limitsAfter) {
  const b = before.get(l.key) ?? l;
  const rate = (l.used - b.used) / count;
  const at = l.limit !== undefined && rate > 0 ? Math.floor(count + (l.limit - l.used) / rate) : undefined;
  if (at !== undefined) ceilings.push({ key: l.key, at, of: l.of });
  emit(`density limit: ${l.key}`, l.used, 'count', { ...(l.limit !== undefined ? { target: `≤ ${l.limit}` } : {}), baseline: b.used, baselineLabel: 'before the load' });
  if (at !== undefined) emit(`density ceiling: ${l.key}`, at, 'sandboxes');
  table.push(`  ${l.key.padEnd(52)} ${String(b.used).padStart(9)} → ${String(l.used).padStart(9)} of ${String(l.limit ?? 'no cap').padStart(10)}  ${rate.toFixed(2).padStart(7)}/sandbox  ${at === undefined ? '' : `runs out at ~${at}`}`);
}
// Memory: down to MemAvailable 0 at the measured rate (what the kernel would start reclaiming and OOM-killing at).
const memAt = Math.floor(count + availAfter / MiB / perSandboxMiB);
ceilings.push({ key: 'host memory (MemAvailable to 0)', at: memAt, of: 'MemTotal' });
emit('density ceiling: host memory (MemAvailable to 0)', memAt, 'sandboxes');
// The placement reservation: memoryBytes × overcommit / the sandbox's 512 MiB (what the node and control plane admit).
const overcommit = Number(process.env.COVE_MEMORY_OVERCOMMIT ?? 1);
const memBytes = Number(capacity?.memoryBytes ?? 0);
if (memBytes > 0) {
  const reservationAt = Math.floor((memBytes * overcommit) / (512 * 1024 * 1024));
  ceilings.push({ key: `memory reservation ×${overcommit} (512 MiB each)`, at: reservationAt, of: 'COVE_MEMORY_OVERCOMMIT' });
  emit(`density ceiling: memory reservation ×${overcommit}`, reservationAt, 'sandboxes');
}
ceilings.sort((a, b) => a.at - b.at);
const first = ceilings[0]!;
emit('density first ceiling', first.at, 'sandboxes', { target: '≥ 1500' });
say(`density: limits (before → after of limit, per sandbox):\n${table.join('\n')}`);
say(`density: one sandbox: ${procs.map((p) => `${p.comm} (${p.threads} threads) PSS ${(p.pssKiB / MiB).toFixed(1)} MiB RSS ${(p.rssKiB / MiB).toFixed(1)} MiB`).join('; ')}`);
say(`density: ${count} held (${stop}); ${perSandboxMiB.toFixed(1)} MiB each; first ceiling: ${first.key} at ~${first.at} (${first.of}); next: ${ceilings
  .slice(1, 4)
  .map((c) => `${c.key} ~${c.at}`)
  .join(', ')}`);

// Everything killed, then the node's objects back where they were.
const kills = [...held];
let killFailures = 0;
await Promise.all(
  Array.from({ length: 8 }, async () => {
    for (let s = kills.pop(); s; s = kills.pop()) if (!(await s.kill().catch(() => false))) killFailures++;
  }),
);
const settledFrom = Date.now();
await poolsSettled();
const grown = (after: Count[]) =>
  after.filter((a) => {
    const b = hostBefore.find((x) => x.key === a.key);
    return b !== undefined && a.value > b.value;
  });
let hostAfter = hostCensus(d.stateDir);
while (grown(hostAfter).length > 0 && Date.now() - settledFrom < SETTLE_MS) {
  await sleep(1000);
  hostAfter = hostCensus(d.stateDir);
}
const left = grown(hostAfter);
emit('density kills that failed', killFailures, 'count');
for (const c of hostAfter) emit(`density after kill: ${c.key}`, c.value, c.unit, { baseline: hostBefore.find((x) => x.key === c.key)?.value ?? NaN, baselineLabel: 'before the load' });
emit('density host objects not back after kill', left.length, 'count');
for (const l of left) say(`density: NOT BACK ${l.key}: ${hostBefore.find((x) => x.key === l.key)?.value} → ${l.value}`);
const limitsEnd = new Map(limitCensus(names).map((l: LimitUse) => [l.key, l.used]));
say(`density: after kill: ${[...before.values()].map((l) => `${l.key} ${l.used}→${limitsEnd.get(l.key)}`).join(', ')}`);
if (left.length === 0 && killFailures === 0) say('density: every host object of the node is back where it started');
