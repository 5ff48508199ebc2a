// Benchmark server process: a control plane (SQLite in a temp dir) in front of the wire-level cluster fixture
// with four roomy nodes. Prints one JSON line `{url, key}` when ready and runs until stdin closes.
// The cluster fixture runs in a process of its own (`server.js cluster`), as the edge runs on another host: the
// control plane's figures are then its own work, not the fixture's. BENCH_CLUSTER_INPROC=1 keeps it in this
// process (how the bench ran before).

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { ADMIN_TOKEN, setupTeam, startControlPlane } from '../test/fixtures/control-plane.js';
import { startFakeCluster } from '../test/fixtures/fake-cluster.js';

async function startCluster(): Promise<{ endpoint: string; token: string; close(): Promise<void> }> {
  const cluster = await startFakeCluster();
  for (let i = 0; i < 4; i++) cluster.addNode(`bench-node-${i}`, { cpuCount: 64, memoryBytes: 256n << 30n, diskBytes: 4n << 40n });
  return cluster;
}

/**
 * Runs until stdin closes, then `close`s. A line `cpu` on stdin is answered with this process's CPU time so far
 * (`{"cpuMs":…}`): the bench reports the control plane's own CPU per operation, a figure a busy machine's
 * neighbours do not move as much as throughput.
 */
function untilStdinEnds(close: () => Promise<void>): void {
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line !== 'cpu') return;
    const { user, system } = process.cpuUsage();
    process.stdout.write(`${JSON.stringify({ cpuMs: (user + system) / 1000 })}\n`);
  });
  lines.on('close', () => void close());
}

if (process.argv[2] === 'cluster') {
  const cluster = await startCluster();
  process.stdout.write(`${JSON.stringify({ endpoint: cluster.endpoint, token: cluster.token })}\n`);
  untilStdinEnds(() => cluster.close());
} else {
  let cluster: { endpoint: string; token: string; close(): Promise<void> };
  if (process.env.BENCH_CLUSTER_INPROC === '1') {
    cluster = await startCluster();
  } else {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'cluster'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const first = await createInterface({ input: child.stdout! })[Symbol.asyncIterator]().next();
    const { endpoint, token } = JSON.parse(String(first.value)) as { endpoint: string; token: string };
    const exited = new Promise((resolve) => child.once('exit', resolve));
    cluster = { endpoint, token, close: async () => void (child.stdin!.end(), await exited) };
  }
  // The node list cache as deployed (config.ts's default), not the test fixture's 0 (tests want node changes
  // seen at once); BENCH_NODE_LIST_CACHE_MS=0 measures without it.
  const cache = process.env.BENCH_NODE_LIST_CACHE_MS ?? String(loadConfig({ COVE_ADMIN_TOKEN: ADMIN_TOKEN }).nodeListCacheMs);
  const cp = await startControlPlane({ COVE_CPU_OVERCOMMIT: '16', COVE_NODE_LIST_CACHE_MS: cache });
  const { key } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 100_000 });
  process.stdout.write(`${JSON.stringify({ url: cp.url, key })}\n`);
  untilStdinEnds(() => cp.close().then(() => cluster.close()));
}
