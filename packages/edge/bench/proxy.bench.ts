// Requests/s and latency straight to an upstream vs. through the edge's traffic port, served by the Node server
// alone (COVE_TRAFFIC_PROXY=node) and by the edge's HAProxy (COVE_TRAFFIC_PROXY=haproxy), in the same rounds. Upstream, edges and
// this load generator (undici Pool with keep-alive and pipelining) are separate processes, like undici's
// own benchmarks. Prints a table to stderr, one JSON document to stdout, and `BENCH_RESULT {...}` lines for
// `cove bench` (packages/cli/src/bench.ts). Direct and via-edge runs alternate for --rounds rounds and the
// medians are reported, with each round's ratio, since a shared 2-core machine swings by ±30 % between runs.
// Two request shapes: GET (a sandbox's web server, file downloads) and POST with a small JSON body, the shape of
// every E2B SDK envd call (Connect RPC `process.Process/Start`, `filesystem.*`); `--method` picks one or both.
//
//   node packages/edge/dist/bench/proxy.bench.js [--duration 5] [--connections 50] [--pipelining 1] [--rounds 3] [--method GET|POST|both]

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { create } from '@bufbuild/protobuf';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { HeartbeatRequestSchema, NodeRegistry } from '@cove/contracts/edge';
import { Pool } from 'undici';
import { deriveNodeToken } from '@cove/auth-tokens';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '50' },
    pipelining: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '3' },
    method: { type: 'string', default: 'both' },
  },
});
if (!['GET', 'POST', 'both'].includes(values.method!)) throw new Error('--method must be GET, POST or both');
const METHODS = (values.method === 'both' ? ['GET', 'POST'] : [values.method]) as ('GET' | 'POST')[];
const DURATION_MS = Number(values.duration) * 1000;
const CONNECTIONS = Number(values.connections);
const PIPELINING = Number(values.pipelining);
const ROUNDS = Math.max(1, Number(values.rounds));
// The edge derives each node's token from its credential key (as in a deployment); the bench node presents its own.
const NODE_CREDENTIAL_KEY = 'bench-node-credential-key-0123456789abcdef';
const NODE_TOKEN = deriveNodeToken(NODE_CREDENTIAL_KEY, 'bench-node');
const here = dirname(fileURLToPath(import.meta.url));
/** A `commands.run('true')` start request as the SDK's Connect transport sends it (JSON codec, fixed length). */
const POST_BODY = Buffer.from(JSON.stringify({ process: { cmd: '/bin/bash', args: ['-l', '-c', 'true'], envs: {} }, stdin: false }));
const POST_HEADERS = { 'content-type': 'application/json', 'connect-protocol-version': '1' };

/** Spawn a node process and resolve with the first stdout JSON line matching `pick`. */
async function spawnAndRead<T>(args: string[], env: Record<string, string>, pick: (line: any) => T | undefined): Promise<{ child: ChildProcess; value: T }> {
  const child = spawn(process.execPath, [...(process.env.COVE_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    try {
      const v = pick(JSON.parse(line));
      if (v !== undefined) {
        lines.removeAllListeners();
        child.stdout!.resume();
        return { child, value: v };
      }
    } catch {
      /* not JSON */
    }
  }
  throw new Error(`${args[0]} exited before it was ready`);
}

interface RunResult {
  requests: number;
  errors: number;
  rps: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
}

async function load(origin: string, method: 'GET' | 'POST', routing: Record<string, string>): Promise<RunResult> {
  const request =
    method === 'GET' ? { path: '/', method, headers: routing } : { path: '/process.Process/Start', method, headers: { ...routing, ...POST_HEADERS }, body: POST_BODY };
  const pool = new Pool(origin, { connections: CONNECTIONS, pipelining: PIPELINING, keepAliveTimeout: 30_000 });
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const deadline = started + DURATION_MS;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      try {
        const res = await pool.request(request);
        await res.body.dump();
        if (res.statusCode !== 200) errors++;
        else latencies.push(performance.now() - t0);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS * PIPELINING }, worker));
  const elapsed = (performance.now() - started) / 1000;
  await pool.close();
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => Number((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0).toFixed(3));
  return {
    requests: latencies.length,
    errors,
    rps: Math.round(latencies.length / elapsed),
    latencyMs: { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: q(1 - Number.EPSILON) },
  };
}

// The edge needs a cluster store (COPY upload URLs); a throwaway one, unused by this benchmark.
const storageDir = mkdtempSync(join(tmpdir(), 'cove-bench-edge-'));
process.on('exit', () => rmSync(storageDir, { recursive: true, force: true }));
const upstream = await spawnAndRead([join(here, 'upstream-server.js')], {}, (l: { port?: number }) => l.port);
const startEdge = (trafficProxy: 'node' | 'haproxy') =>
  spawnAndRead(
  [join(here, '..', 'src', 'main.js')],
  {
    COVE_TRAFFIC_PROXY: trafficProxy,
    COVE_EDGE_RUN_DIR: join(storageDir, `run-${trafficProxy}`),
    COVE_EDGE_API_PORT: '0',
    COVE_EDGE_TRAFFIC_PORT: '0',
    COVE_CLUSTER_TOKEN: 'bench-cluster-token-0123456789',
    COVE_NODE_CREDENTIAL_KEY: NODE_CREDENTIAL_KEY,
    COVE_SANDBOX_DOMAIN: 'cove.bench',
    COVE_STORAGE_URL: pathToFileURL(storageDir).href,
    COVE_UPLOAD_SECRET: 'bench-upload-secret-0123456789abcdef0123456789',
    COVE_LOG_LEVEL: 'info',
  },
  (l: { apiPort?: number; trafficPort?: number; trafficProxy?: string }) =>
    l.apiPort ? { apiPort: l.apiPort, trafficPort: l.trafficPort!, trafficProxy: l.trafficProxy } : undefined,
  );
const edge = await startEdge('node');
const haproxyEdge = await startEdge('haproxy');
if (haproxyEdge.value.trafficProxy !== 'haproxy') throw new Error('the HAProxy arm needs haproxy installed (apt-get install haproxy)');

try {
  for (const e of [edge, haproxyEdge]) {
    const apiUrl = `http://127.0.0.1:${e.value.apiPort}`;
    const manager = new Http2SessionManager(apiUrl);
    await createClient(NodeRegistry, createGrpcTransport({ baseUrl: apiUrl, sessionManager: manager })).heartbeat(
      create(HeartbeatRequestSchema, {
        info: { nodeId: 'bench-node', version: 'bench' },
        rpcUrl: 'http://127.0.0.1:1',
        proxyUrl: `http://127.0.0.1:${upstream.value}`,
        sandboxIds: ['benchsbx'],
        // Public: the sandbox HAProxy routes itself (a heartbeat-only entry would be `recovered`, the fallback's).
        sandboxTraffic: [{ sandboxId: 'benchsbx', trafficTokenSha256: '' }],
      }),
      { headers: { authorization: `Bearer ${NODE_TOKEN}` } },
    );
    manager.abort();
  }

  const routing = { 'e2b-sandbox-id': 'benchsbx', 'e2b-sandbox-port': '49983' };
  for (const method of METHODS) {
    const rounds: { direct: RunResult; viaEdge: RunResult; viaHaproxy: RunResult; ratio: number; haproxyRatio: number }[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const d = await load(`http://127.0.0.1:${upstream.value}`, method, {});
      const e = await load(`http://127.0.0.1:${edge.value.trafficPort}`, method, routing);
      const h = await load(`http://127.0.0.1:${haproxyEdge.value.trafficPort}`, method, routing);
      const ratio = (r: RunResult) => Number((r.rps / Math.max(1, d.rps)).toFixed(2));
      rounds.push({ direct: d, viaEdge: e, viaHaproxy: h, ratio: ratio(e), haproxyRatio: ratio(h) });
    }
    // The round with the median ratio stands for the run, so its direct and via-edge figures belong together
    // (per arm: the Node edge's and the HAProxy edge's median rounds may differ).
    const median = [...rounds].sort((a, b) => a.ratio - b.ratio)[Math.floor(rounds.length / 2)]!;
    const haproxyMedian = [...rounds].sort((a, b) => a.haproxyRatio - b.haproxyRatio)[Math.floor(rounds.length / 2)]!;
    const { direct, viaEdge } = median;
    const { viaHaproxy } = haproxyMedian;
    const result = {
      benchmark: 'edge-proxy',
      method,
      node: process.version,
      durationS: DURATION_MS / 1000,
      connections: CONNECTIONS,
      pipelining: PIPELINING,
      ...(method === 'POST' ? { bodyBytes: POST_BODY.length } : {}),
      direct,
      viaEdge,
      overheadRatio: Number((direct.rps / Math.max(1, viaEdge.rps)).toFixed(2)),
      /** Via edge / direct requests per second (issue 14's "HTTP requests/s through the edge vs direct"). */
      throughputRatio: median.ratio,
      /** The same through the edge's HAProxy (the traffic port's default server). */
      viaHaproxy,
      haproxyDirect: haproxyMedian.direct,
      haproxyThroughputRatio: haproxyMedian.haproxyRatio,
      rounds: rounds.map((r) => ({ directRps: r.direct.rps, viaEdgeRps: r.viaEdge.rps, viaHaproxyRps: r.viaHaproxy.rps, ratio: r.ratio, haproxyRatio: r.haproxyRatio })),
    };
    const row = (name: string, r: RunResult): string =>
      `${name.padEnd(12)} ${String(r.rps).padStart(8)} req/s  p50 ${r.latencyMs.p50} ms  p99 ${r.latencyMs.p99} ms  errors ${r.errors}`;
    for (const [i, r] of rounds.entries()) {
      process.stderr.write(`${method} round ${i + 1}: ${r.direct.rps} direct, ${r.viaEdge.rps} via Node edge (${r.ratio}), ${r.viaHaproxy.rps} via HAProxy edge (${r.haproxyRatio})\n`);
    }
    process.stderr.write(`${method} median rounds:\n${row('direct', direct)}\n${row('via edge', viaEdge)}  ratio ${median.ratio}\n`);
    process.stderr.write(`${row('direct', haproxyMedian.direct)}\n${row('via haproxy', viaHaproxy)}  ratio ${haproxyMedian.haproxyRatio}\n`);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    // GET keeps its historical figure names; POST's carry `.post`.
    const prefix = method === 'GET' ? 'edge.proxy' : 'edge.proxy.post';
    const figures = [
      { name: `${prefix}.direct.rps`, value: direct.rps, unit: 'req/s' },
      { name: `${prefix}.via_edge.rps`, value: viaEdge.rps, unit: 'req/s' },
      { name: `${prefix}.via_edge.p50`, value: viaEdge.latencyMs.p50, unit: 'ms' },
      { name: `${prefix}.via_edge.p99`, value: viaEdge.latencyMs.p99, unit: 'ms' },
      { name: `${prefix}.overhead_ratio`, value: result.overheadRatio, unit: 'x', target: 'lower is better' },
      { name: `${prefix}.throughput_ratio`, value: result.throughputRatio, unit: 'x' },
      { name: `${prefix}.via_haproxy.rps`, value: viaHaproxy.rps, unit: 'req/s' },
      { name: `${prefix}.via_haproxy.p50`, value: viaHaproxy.latencyMs.p50, unit: 'ms' },
      { name: `${prefix}.via_haproxy.p99`, value: viaHaproxy.latencyMs.p99, unit: 'ms' },
      { name: `${prefix}.haproxy_throughput_ratio`, value: result.haproxyThroughputRatio, unit: 'x', target: '>= 0.7' },
    ];
    for (const f of figures) process.stdout.write(`BENCH_RESULT ${JSON.stringify(f)}\n`);
  }
} finally {
  for (const c of [edge.child, haproxyEdge.child, upstream.child]) {
    c.kill('SIGTERM');
    if (c.exitCode === null) await once(c, 'exit');
  }
}
