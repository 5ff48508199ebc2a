// Benchmark server process: a control plane (SQLite in a temp dir) in front of the wire-level cluster fixture
// with four roomy nodes. Prints one JSON line `{url, key}` when ready and runs until stdin closes.

import { setupTeam, startControlPlane } from '../test/fixtures/control-plane.js';
import { startFakeCluster } from '../test/fixtures/fake-cluster.js';

const cluster = await startFakeCluster();
for (let i = 0; i < 4; i++) cluster.addNode(`bench-node-${i}`, { cpuCount: 64, memoryBytes: 256n << 30n });
const cp = await startControlPlane({ COVE_CPU_OVERCOMMIT: '16' });
const { key } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 100_000 });
process.stdout.write(`${JSON.stringify({ url: cp.url, key })}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  void cp.close().then(() => cluster.close());
});
