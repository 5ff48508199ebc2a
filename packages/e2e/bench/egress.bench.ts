// Egress policy cost through the unchanged SDK (issue 12 "Bench"), against the e2e stand-in internet
// (test/stand-in-web.ts: example.test on 203.0.113.10, HTTP :80 and HTTPS :443). Two sandboxes of the same run:
// "direct" has no policy (its flows are forwarded and NATed by the node's kernel); "proxied" has a deny-all that
// allows `example.test` by name, so each of its connections to 203.0.113.10 is redirected to the node's egress
// proxy, named (Host / SNI), judged, resolved and dialled by the proxy. Measured inside the sandboxes (python):
//  - fresh-connection request latency (connect + request + whole answer), HTTP and HTTPS, rounds interleaved;
//  - single-connection download throughput (64 MiB), HTTP and HTTPS, median of three per path;
//  - `updateNetwork` to effect: a prober in a sandbox connects to 203.0.113.11:8080 every ~2 ms (not 80/443, which a
//    hostname policy sends to the proxy, so a connect there always succeeds) and records when the
//    answer changes; each update (allow, then deny again) is timed from the SDK call to the first changed probe
//    (the sandbox and the bench share the host's clock).
// Needs root (the stand-in netns); `cove bench` starts the deployment with the stand-in's resolver.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ALL_TRAFFIC, Sandbox } from 'e2b';
import { deployment, E2E_UPSTREAM_CA_FILE } from '../test/deployment.js';
import { StandIn, WEB1, WEB2 } from '../test/stand-in-web.js';
import { percentile, report } from './stats.js';

const REQUESTS = Number(process.env.COVE_BENCH_EGRESS_REQUESTS ?? 200);
const DOWNLOAD_MIB = Number(process.env.COVE_BENCH_EGRESS_MIB ?? 64);
const UPDATES = Number(process.env.COVE_BENCH_EGRESS_UPDATES ?? 10);

/** Latency: `n` fresh connections, one GET each, to the IP with the name as Host / SNI (no DNS in the timing). */
const CLIENT_PY = `import sys, json, socket, ssl, time
mode, ip, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def once(path):
    t = time.perf_counter()
    s = socket.create_connection((ip, 443 if mode == "https" else 80), timeout=10)
    if mode == "https": s = ctx.wrap_socket(s, server_hostname="example.test")
    s.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: example.test\\r\\nConnection: close\\r\\n\\r\\n").encode())
    got = 0
    buf = bytearray(1 << 18)
    while True:
        k = s.recv_into(buf)
        if not k: break
        got += k
    s.close()
    return time.perf_counter() - t, got
if size == 0:
    print(json.dumps([once("/")[0] * 1000 for _ in range(n)]))
else:
    out = []
    for _ in range(n):
        dt, got = once("/bytes/" + str(size))
        if got < size: raise SystemExit("short read: " + str(got))
        out.append(size / dt / 1e6)
    print(json.dumps(out))
`;

/** Connects every ~2 ms; appends "<unix ms> ok|fail" to the log on every change of the answer. */
const PROBER_PY = `import socket, time
last = None
while True:
    try:
        socket.create_connection(("${WEB2}", 8080), timeout=0.05).close(); st = "ok"
    except Exception:
        st = "fail"
    if st != last:
        with open("/tmp/probe.log", "a") as f: f.write("%d %s\\n" % (time.time() * 1000, st))
        last = st
    time.sleep(0.002)
`;

async function run(sbx: Sandbox, mode: 'http' | 'https', n: number, size: number): Promise<number[]> {
  const r = await sbx.commands.run(`python3 /tmp/egress_client.py ${mode} ${WEB1} ${n} ${size}`, { timeoutMs: 300_000 });
  return JSON.parse(r.stdout.trim()) as number[];
}

const median = (xs: number[]): number => percentile(xs, 50);

/** The first probe transition to `state` logged at or after `since` (unix ms), waiting for it. */
async function transition(sbx: Sandbox, state: 'ok' | 'fail', since: number): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    // Absent until the prober's first probe.
    const log = await sbx.files.read('/tmp/probe.log').catch((err: Error) => (err.name === 'FileNotFoundError' ? '' : Promise.reject(err)));
    const hit = log
      .split('\n')
      .map((l) => l.split(' '))
      .find(([t, s]) => s === state && Number(t) >= since);
    if (hit) return Number(hit[0]);
    if (Date.now() > deadline) throw new Error(`no "${state}" probe within 10 s of an update`);
  }
}

const d = deployment();
const inet = new StandIn(randomBytes(4).toString('hex'));
await inet.start(join(d.stateDir, E2E_UPSTREAM_CA_FILE));
const made: Sandbox[] = [];
try {
  const direct = await Sandbox.create({ timeoutMs: 900_000 });
  made.push(direct);
  const proxied = await Sandbox.create({ timeoutMs: 900_000, network: { allowOut: ['example.test'], denyOut: [ALL_TRAFFIC] } });
  made.push(proxied);
  for (const s of made) await s.files.write('/tmp/egress_client.py', CLIENT_PY);

  // Warm-up (python start, first TLS handshakes, the proxy's DNS cache), not counted.
  for (const s of made) for (const m of ['http', 'https'] as const) await run(s, m, 5, 0);

  const lat: Record<string, number[]> = { 'http direct': [], 'http proxied': [], 'https direct': [], 'https proxied': [] };
  const chunk = 25;
  for (let i = 0; i < REQUESTS; i += chunk) {
    for (const m of ['http', 'https'] as const) {
      lat[`${m} direct`]!.push(...(await run(direct, m, chunk, 0)));
      lat[`${m} proxied`]!.push(...(await run(proxied, m, chunk, 0)));
    }
  }
  const thr: Record<string, number[]> = { 'http direct': [], 'http proxied': [], 'https direct': [], 'https proxied': [] };
  for (let i = 0; i < 3; i++) {
    for (const m of ['http', 'https'] as const) {
      thr[`${m} direct`]!.push(...(await run(direct, m, 1, DOWNLOAD_MIB * 1024 * 1024)));
      thr[`${m} proxied`]!.push(...(await run(proxied, m, 1, DOWNLOAD_MIB * 1024 * 1024)));
    }
  }
  for (const m of ['http', 'https'] as const) {
    const p50d = median(lat[`${m} direct`]!);
    const p50p = median(lat[`${m} proxied`]!);
    report(`egress ${m}: request p50, direct (baseline, same run)`, p50d, 'ms');
    report(`egress ${m}: request p50, through the egress proxy`, p50p, 'ms');
    report(`egress ${m}: added latency p50`, p50p - p50d, 'ms', '≤ 1');
    report(`egress ${m}: request p95, through the egress proxy`, percentile(lat[`${m} proxied`]!, 95), 'ms');
    const td = median(thr[`${m} direct`]!);
    const tp = median(thr[`${m} proxied`]!);
    report(`egress ${m}: ${DOWNLOAD_MIB} MiB download, direct (baseline)`, td, 'MB/s');
    report(`egress ${m}: ${DOWNLOAD_MIB} MiB download, through the egress proxy`, tp, 'MB/s');
    report(`egress ${m}: throughput ratio proxied/direct`, tp / td, 'x', '≥ 0.8');
  }

  // updateNetwork to effect, both ways, on the proxied sandbox (its policy allows only example.test).
  await proxied.files.write('/tmp/prober.py', PROBER_PY);
  await proxied.commands.run('python3 /tmp/prober.py', { background: true });
  await transition(proxied, 'fail', 0);
  const open: number[] = [];
  const close: number[] = [];
  const call: number[] = [];
  for (let i = 0; i < UPDATES; i++) {
    let t0 = Date.now();
    await proxied.updateNetwork({ allowOut: ['example.test', WEB2], denyOut: [ALL_TRAFFIC] });
    call.push(Date.now() - t0);
    open.push((await transition(proxied, 'ok', t0)) - t0);
    t0 = Date.now();
    await proxied.updateNetwork({ allowOut: ['example.test'], denyOut: [ALL_TRAFFIC] });
    call.push(Date.now() - t0);
    close.push((await transition(proxied, 'fail', t0)) - t0);
  }
  report('updateNetwork to effect p50, allowing an address', median(open), 'ms', '≤ 200');
  report('updateNetwork to effect max, allowing', Math.max(...open), 'ms');
  report('updateNetwork to effect p50, denying it again', median(close), 'ms', '≤ 200');
  report('updateNetwork to effect max, denying', Math.max(...close), 'ms');
  report('updateNetwork SDK call p50 (baseline: the call alone)', median(call), 'ms');
} finally {
  await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  inet.remove();
}
