// The node's telemetry against a real OTLP/HTTP stand-in (records every JSON body posted): a real orchestrator
// (app.ts, real crun sandboxes) creates a sandbox, runs commands and a build; envd's process starts and ends,
// the lifecycle and the build's log lines arrive as log records carrying the node's ids; a CPU-busy command
// shows in the CPU gauge; /metrics on the proxy port needs the node token; a collector that is down costs
// counted records and never a create or a command. A hostile envd's logs reply (huge, endless, dripping,
// malformed) is refused within its bounds.

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { BuildState, TemplateService } from '@cove/contracts/orchestrator';
import { Attr, ENVD_LOGS_PATH, SEVERITY_OF_LEVEL, SandboxMetric, NodeMetric } from '@cove/contracts/telemetry';
import { startOtlpStandIn, type OtlpStandIn } from '@cove/telemetry/testing';

import { ENVD_LOGS_REPLY_MAX_BYTES, EnvdLogsUnreadable, pullEnvdLogs, waitEnvdLogs } from '../src/telemetry/envd-logs.js';
import {
  NODE_TOKEN,
  bearer,
  instance,
  processClient,
  rpcClients,
  runInSandbox,
  spec,
  startOrchestrator,
  teardown,
  waitFor,
  type Running,
} from './orchestrator-fixture.js';
import { ENVD_PORT } from '@cove/contracts/sandbox';
import { metricSample } from '@cove/test-support/prometheus-text';

const I = instance('covttel', 'ctt-', '10.203.0.0/16');
const COLLECTOR_TOKEN = 'collector-token-for-the-telemetry-test';
const MiB = 1024 * 1024;

/** The value of a Prometheus sample by name and labels (in any order); undefined when absent. */
describe('node telemetry', () => {
  let otlp: OtlpStandIn;
  let node: Running;
  let rpc: ReturnType<typeof rpcClients>;

  before(async () => {
    await teardown(I);
    otlp = await startOtlpStandIn();
    node = await startOrchestrator(I, {
      COVE_COLLECTOR_URL: otlp.url,
      COVE_COLLECTOR_TOKEN: COLLECTOR_TOKEN,
      COVE_TELEMETRY_LOG_PULL_MS: '250',
      COVE_TELEMETRY_LOG_WAIT_MS: '1000',
      COVE_TELEMETRY_METRIC_INTERVAL_MS: '500',
    });
    rpc = rpcClients(node.rpcUrl);
  });

  after(async () => {
    await node?.close();
    await otlp?.close().catch(() => undefined);
    await teardown(I);
  });

  const metrics = (token: string | null) =>
    fetch(`${node.proxyUrl}/metrics`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });

  it('sends process starts and ends, with exit codes, as sandbox logs stamped with the node\'s ids', { timeout: 120_000 }, async () => {
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tel1', teamId: 'team-tel', envdAccessToken: 'tok-tel1' }) });
    const proc = processClient(node.proxyUrl, 'tel1', 'tok-tel1');
    const out = await runInSandbox(proc, 'x=42; echo stdout-canary-$x; exit 3');
    assert.equal(out.exitCode, 3);
    const ofTel1 = () => otlp.logs().filter((l) => l.attributes[Attr.sandboxId] === 'tel1');
    assert.ok(
      await waitFor(() => ofTel1().some((l) => l.body === 'process ended' && l.attributes.exitCode === 3), 20_000),
      JSON.stringify(ofTel1(), null, 1),
    );
    const logs = ofTel1();
    const started = logs.find((l) => l.body === 'process started' && String(l.attributes.args).includes('stdout-canary'))!;
    const ended = logs.find((l) => l.body === 'process ended' && l.attributes.exitCode === 3)!;
    assert.ok(started, 'process start recorded');
    for (const l of [started, ended]) {
      assert.equal(l.attributes[Attr.logKind], 'sandbox');
      assert.equal(l.attributes[Attr.teamId], 'team-tel');
      assert.equal(l.attributes[Attr.templateId], 'base');
      assert.equal(l.resource[Attr.serviceName], 'cove-orchestrator');
      assert.equal(l.resource[Attr.serviceInstanceId], node.config.nodeId);
    }
    assert.equal(started.attributes.cmd, '/bin/bash');
    assert.equal(ended.attributes.pid, started.attributes.pid);
    assert.equal(ended.severityNumber, SEVERITY_OF_LEVEL.warn);
    assert.ok(logs.some((l) => l.body === 'sandbox created' && l.attributes.source === 'node'), 'the node\'s own lifecycle record');
    assert.equal(logs.filter((l) => l.body === 'envd initialized').length, 1, 'envd init recorded, once');
    // The logs begin at the sandbox's /init: envd's start and whatever its slot ran before the claim were not the sandbox's.
    assert.ok(!logs.some((l) => l.body === 'envd started'), 'envd\'s start, before the claim, is not in the sandbox\'s logs');
    assert.deepEqual(logs.filter((l) => l.body === 'process started').map((l) => String(l.attributes.args).includes('stdout-canary')), [true]);
    assert.ok(!JSON.stringify(otlp.logs()).includes('stdout-canary-42'), 'a process\'s output is never a log record');
    assert.ok(otlp.posts.every((p) => p.authorization === `Bearer ${COLLECTOR_TOKEN}`));
  });

  it('an idle sandbox is waited on, not pulled every round; a line after the idle still arrives', { timeout: 120_000 }, async () => {
    const requests = async () => {
      const text = await (await metrics(NODE_TOKEN)).text();
      return {
        pull: metricSample(text, 'cove_envd_log_requests_total', { route: 'pull' }) ?? 0,
        wait: metricSample(text, 'cove_envd_log_requests_total', { route: 'wait' }) ?? 0,
      };
    };
    // Caught up: the ring is being waited on.
    assert.ok(await waitFor(async () => (await requests()).wait > 0, 20_000, 250), 'no wait was ever held');
    const r0 = await requests();
    // Three waits of 1 s end with nothing new: ≥ 8 rounds of 250 ms, each of which pulled the sandbox before.
    assert.ok(await waitFor(async () => (await requests()).wait >= r0.wait + 3, 30_000, 250), 'the waits did not go on');
    const r1 = await requests();
    assert.ok(r1.pull - r0.pull <= 1, `an idle sandbox was pulled ${r1.pull - r0.pull} times in ${r1.wait - r0.wait} waits`);
    const out = await runInSandbox(processClient(node.proxyUrl, 'tel1', 'tok-tel1'), 'echo after-idle');
    assert.equal(out.stdout.trim(), 'after-idle');
    assert.ok(
      await waitFor(() => otlp.logs().some((l) => l.attributes[Attr.sandboxId] === 'tel1' && l.body === 'process started' && String(l.attributes.args).includes('after-idle')), 20_000),
      'the line written after the idle never arrived',
    );
    assert.ok((await requests()).pull > r1.pull, 'news is pulled');
  });

  it('a CPU-busy command shows in the sandbox CPU gauge; totals come from the sandbox\'s limits', { timeout: 120_000 }, async () => {
    const proc = processClient(node.proxyUrl, 'tel1', 'tok-tel1');
    // Busy for 25 s in the background; the command itself returns at once.
    const r = await runInSandbox(proc, "nohup timeout 25 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo started");
    assert.equal(r.stdout.trim(), 'started');
    const busy = () => otlp.points().find((p) => p.name === SandboxMetric.cpuUsedPct && p.attributes[Attr.sandboxId] === 'tel1' && p.value > 10);
    assert.ok(await waitFor(() => Boolean(busy()), 30_000), 'cpu gauge never rose');
    assert.equal(busy()!.attributes[Attr.teamId], 'team-tel');
    const last = (name: string) => otlp.points().filter((p) => p.name === name && p.attributes[Attr.sandboxId] === 'tel1').at(-1)?.value;
    assert.equal(last(SandboxMetric.cpuCount), 1);
    assert.equal(last(SandboxMetric.memoryTotal), 256 * MiB);
    assert.equal(last(SandboxMetric.diskTotal), 1024 * MiB);
    assert.ok((last(SandboxMetric.memoryUsed) ?? 0) > 0);
    const node1 = (name: string) => otlp.points().filter((p) => p.name === name).at(-1)?.value ?? 0;
    assert.ok(node1(NodeMetric.cpuCount) >= 1);
    assert.ok(node1(NodeMetric.memoryTotal) > 0 && node1(NodeMetric.diskTotal) > 0);
    assert.ok(otlp.points().some((p) => p.name === NodeMetric.sandboxesRunning && p.value >= 1));
  });

  it('sends every build log line with template, build and step ids', { timeout: 150_000 }, async () => {
    const c = createClient(TemplateService, createGrpcTransport({ baseUrl: node.rpcUrl, interceptors: [bearer(NODE_TOKEN)] }));
    await c.build({
      templateId: 'teltpl',
      buildId: 'telb1',
      teamId: 'team-tel',
      source: { case: 'fromBuildId', value: 'base' },
      vcpu: 1,
      memoryMb: 256,
      diskMb: 512,
      steps: [{ type: 'RUN', args: ['echo build-line-$((6*7))'] }],
    });
    assert.ok(
      await waitFor(async () => (await c.buildStatus({ templateId: 'teltpl', buildId: 'telb1', logsOffset: 0 })).state !== BuildState.BUILDING, 120_000, 250),
    );
    const line = () => otlp.logs().find((l) => l.attributes[Attr.logKind] === 'build' && l.body === 'build-line-42');
    assert.ok(await waitFor(() => Boolean(line()), 10_000), JSON.stringify(otlp.logs().filter((l) => l.attributes[Attr.logKind] === 'build')));
    const l = line()!;
    assert.equal(l.attributes[Attr.templateId], 'teltpl');
    assert.equal(l.attributes[Attr.buildId], 'telb1');
    assert.equal(l.attributes[Attr.teamId], 'team-tel');
    assert.equal(l.attributes[Attr.buildStep], '1');
    assert.equal(l.attributes[Attr.sandboxId], undefined);
  });

  /** Every start record of tel1 once (a ring pulled again from its start would repeat earlier ones). */
  const assertStartsUnique = () => {
    const starts = otlp.logs().filter((l) => l.attributes[Attr.sandboxId] === 'tel1' && l.body === 'process started');
    const keys = starts.map((l) => JSON.stringify([l.timeUnixNano, l.attributes.pid, l.attributes.args]));
    assert.equal(new Set(keys).size, keys.length, `a start record was sent twice: ${keys.join(' ')}`);
    return starts;
  };

  it('a snapshot of a running sandbox sends nothing twice (pull rounds run while it is off the routing table)', { timeout: 120_000 }, async () => {
    // A snapshot holds the sandbox detached for longer than a pull round (250 ms here): rounds run meanwhile.
    const t0 = Date.now();
    await rpc.sandboxes.snapshot({ sandboxId: 'tel1', snapshotId: 'persist-tel1' });
    const held = Date.now() - t0;
    assert.ok(held > 250, `the snapshot took ${held} ms, less than a pull round: the test would prove nothing`);
    const out = await runInSandbox(processClient(node.proxyUrl, 'tel1', 'tok-tel1'), 'echo after-snapshot');
    assert.equal(out.stdout.trim(), 'after-snapshot');
    assert.ok(await waitFor(() => otlp.logs().some((l) => l.attributes[Attr.sandboxId] === 'tel1' && l.body === 'process started' && String(l.attributes.args).includes('after-snapshot')), 20_000));
    // A cursor lost while detached pulls the ring from its start: the earlier records come in the same reply as
    // this command's, so they are here by now.
    assertStartsUnique();
  });

  it('pause and resume are sandbox log records; a memory resume sends nothing twice', { timeout: 180_000 }, async () => {
    const before = otlp.logs().filter((l) => l.attributes[Attr.sandboxId] === 'tel1' && l.body === 'process started').length;
    await rpc.sandboxes.pause({ sandboxId: 'tel1', snapshotId: 'snap-tel1', memory: true });
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tel1', teamId: 'team-tel', snapshotId: 'snap-tel1', envdAccessToken: 'tok-tel1' }) });
    const out = await runInSandbox(processClient(node.proxyUrl, 'tel1', 'tok-tel1'), 'echo after-resume');
    assert.equal(out.stdout.trim(), 'after-resume');
    const ofTel1 = () => otlp.logs().filter((l) => l.attributes[Attr.sandboxId] === 'tel1');
    assert.ok(await waitFor(() => ofTel1().some((l) => l.body === 'process started' && String(l.attributes.args).includes('after-resume')), 20_000));
    const bodies = ofTel1().map((l) => l.body);
    assert.ok(bodies.includes('sandbox paused') && bodies.includes('sandbox resumed'), JSON.stringify(bodies));
    // Nothing twice. Counting against `before` raced with earlier commands' records still on their way.
    const starts = assertStartsUnique();
    assert.equal(starts.filter((l) => String(l.attributes.args).includes('after-resume')).length, 1, 'the new command\'s start once');
    assert.ok(starts.length >= before + 1);
    for (const l of ofTel1()) assert.equal(l.attributes[Attr.teamId], 'team-tel');
  });

  it('serves Prometheus /metrics on the proxy port only with the node token', async () => {
    await assert.rejects(rpcClients(node.rpcUrl, null).info.info({}));
    assert.equal((await metrics(null)).status, 401);
    assert.equal((await metrics('not-the-node-token')).status, 403);
    const res = await metrics(NODE_TOKEN);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok((metricSample(text, 'cove_rpc_requests_total', { operation: 'Create', outcome: 'ok' }) ?? 0) >= 1, text);
    assert.ok((metricSample(text, 'cove_rpc_request_duration_seconds_count', { operation: 'Create' }) ?? 0) >= 1);
    assert.ok((metricSample(text, 'cove_rpc_requests_total', { operation: 'Info', outcome: 'Unauthenticated' }) ?? 0) >= 1, 'refused calls are counted');
    assert.ok((metricSample(text, 'cove_sandboxes', { state: 'running' }) ?? 0) >= 1);
    assert.equal(metricSample(text, 'cove_warm_pool_slots', { template: 'base', kind: 'target' }), 1);
    assert.equal(metricSample(text, 'cove_sandbox_pause_duration_seconds_count', {}), 1);
    assert.equal(metricSample(text, 'cove_sandbox_resume_duration_seconds_count', {}), 1);
    assert.equal(metricSample(text, 'cove_telemetry_dropped_total', { signal: 'logs' }), 0);
    assert.ok(metricSample(text, 'cove_process_cpu_seconds_total', { component: 'orchestrator' }) !== undefined);
    // A sandbox's own /metrics (named by the routing headers) still goes to the sandbox.
    const viaSandbox = await fetch(`${node.proxyUrl}/metrics`, {
      headers: { 'cove-node-token': NODE_TOKEN, 'e2b-sandbox-id': 'tel1', 'e2b-sandbox-port': '49983', authorization: `Bearer ${NODE_TOKEN}` },
    });
    assert.notEqual(viaSandbox.status, 200, 'envd-internal /metrics is refused by the node proxy, not answered by the node');
  });

  it('a collector that is down never blocks a create or a command; what is lost is counted', { timeout: 120_000 }, async () => {
    await otlp.close();
    const t0 = Date.now();
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tel2', teamId: 'team-tel', envdAccessToken: 'tok-tel2' }) });
    const out = await runInSandbox(processClient(node.proxyUrl, 'tel2', 'tok-tel2'), 'for i in 1 2 3 4 5; do true; done; echo ok');
    assert.equal(out.stdout.trim(), 'ok');
    assert.ok(Date.now() - t0 < 30_000, `create and command took ${Date.now() - t0} ms`);
    const dropped = async () => {
      const text = await (await metrics(NODE_TOKEN)).text();
      return metricSample(text, 'cove_telemetry_dropped_total', { signal: 'logs' }) ?? 0;
    };
    assert.ok(await waitFor(async () => (await dropped()) > 0, 40_000, 250), 'dropped counter never rose');
    await rpc.sandboxes.delete({ sandboxId: 'tel2' });
    await rpc.sandboxes.delete({ sandboxId: 'tel1' });
  });
});

/**
 * A subverted envd answers the node's log pull: each mode below is what root in a sandbox could make its envd
 * port say. A real HTTP server on a loopback address of its own, on envd's port.
 */
describe('a hostile envd answering GET /cove/logs', () => {
  let server: Server;
  let address: string;
  let mode = 'huge';
  const seen: string[] = [];

  before(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers['x-cove-init-token'] ?? ''}`);
      const junk = Buffer.alloc(64 * 1024, 'x');
      if (mode === 'huge') {
        res.writeHead(200, { 'content-length': String(1024 * MiB) });
        const pump = () => {
          while (res.write(junk));
        };
        res.on('drain', pump);
        pump();
      } else if (mode === 'endless') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"entries":[');
        const pump = () => {
          while (res.write('{"seq":1,"ts":"2026-01-01T00:00:00.000Z","level":"info","message":"' + 'y'.repeat(4000) + '","fields":{}},'));
        };
        res.on('drain', pump);
        pump();
      } else if (mode === 'drip') {
        res.writeHead(200, { 'content-type': 'application/json' });
        const t = setInterval(() => res.write(' '), 200);
        res.on('close', () => clearInterval(t));
      } else if (mode === 'forged') {
        // Valid JSON, but claims more than the contract allows and ids it has no say over.
        const entries = Array.from({ length: 1001 }, (_, i) => ({ seq: i + 1, ts: new Date().toISOString(), level: 'info', message: 'm', fields: {} }));
        res.end(JSON.stringify({ entries, dropped: 0, next: 1001 }));
      } else if (mode === 'hugeNext') {
        // Valid by the contract (an integer ≥ 0), but no cursor the node could keep and read back.
        res.end(JSON.stringify({ entries: [], dropped: 0, next: 1e300 }));
      } else if (mode === 'hugeLast') {
        res.end(JSON.stringify({ last: 1e300 }));
      } else if (mode === 'missing') {
        res.writeHead(404).end();
      } else if (mode === 'waitOk') {
        res.end(JSON.stringify({ last: 3 }));
      } else if (mode === 'unordered') {
        const e = (seq: number) => ({ seq, ts: new Date().toISOString(), level: 'info', message: 'm', fields: {} });
        res.end(JSON.stringify({ entries: [e(5), e(4)], dropped: 0, next: 5 }));
      } else {
        res.end(JSON.stringify({ entries: [{ seq: 1, ts: new Date().toISOString(), level: 'info', message: 'ok', fields: { [Attr.sandboxId]: 'other' } }], dropped: 0, next: 1 }));
      }
      res.on('error', () => undefined);
    });
    // A loopback address of its own, so envd's fixed port cannot collide with anything else on the host.
    address = `127.${10 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 250)}.${2 + Math.floor(Math.random() * 250)}`;
    server.listen(ENVD_PORT, address);
    await once(server, 'listening');
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const refused = async (m: string, code: string, withinMs: number) => {
    mode = m;
    const heapBefore = process.memoryUsage().arrayBuffers + process.memoryUsage().heapUsed;
    const t0 = Date.now();
    await assert.rejects(pullEnvdLogs(address, 'init-token', 0, 3000), (e: unknown) => e instanceof EnvdLogsUnreadable && e.code === code, m);
    const took = Date.now() - t0;
    assert.ok(took < withinMs, `${m}: ${took} ms`);
    const grown = process.memoryUsage().arrayBuffers + process.memoryUsage().heapUsed - heapBefore;
    assert.ok(grown < 64 * MiB, `${m}: memory grew ${grown} bytes`);
  };

  it('a 1 GiB or endless reply is cut at the bound, a dripping one at the deadline, a malformed one refused', async () => {
    await refused('huge', 'envd_reply_too_large', 3000);
    await refused('endless', 'envd_reply_too_large', 3000);
    await refused('drip', 'envd_reply_timeout', 5000);
    await refused('forged', 'envd_reply_invalid', 3000);
    await refused('unordered', 'envd_reply_invalid', 3000);
    await refused('hugeNext', 'envd_reply_invalid', 3000);
    assert.ok(ENVD_LOGS_REPLY_MAX_BYTES <= 4 * MiB);
    assert.ok(seen.every((s) => s.startsWith(`GET ${ENVD_LOGS_PATH}?after=0&limit=1000 init-token`)), seen.join('\n'));
  });

  it('its wait for news is bounded the same way: a huge or dripping answer is cut, a wrong shape refused', async () => {
    const refusedWait = async (m: string, code: string, withinMs: number, status?: number) => {
      mode = m;
      const t0 = Date.now();
      await assert.rejects(
        waitEnvdLogs(address, 'init-token', 0, 1000),
        (e: unknown) => e instanceof EnvdLogsUnreadable && e.code === code && (status === undefined || e.status === status),
        m,
      );
      assert.ok(Date.now() - t0 < withinMs, `${m}: ${Date.now() - t0} ms`);
    };
    await refusedWait('huge', 'envd_reply_too_large', 3000);
    await refusedWait('endless', 'envd_reply_too_large', 3000);
    // The bound is the wait (1 s) and the pull's 5 s.
    await refusedWait('drip', 'envd_reply_timeout', 8000);
    await refusedWait('ok', 'envd_reply_invalid', 3000);
    await refusedWait('hugeLast', 'envd_reply_invalid', 3000);
    await refusedWait('missing', 'envd_refused', 3000, 404);
    mode = 'waitOk';
    assert.deepEqual(await waitEnvdLogs(address, 'init-token', 0, 1000), { last: 3 });
  });

  it('an honest reply is read; the fields it carries are only fields', async () => {
    mode = 'ok';
    const r = await pullEnvdLogs(address, 'init-token', 0, 3000);
    assert.equal(r.entries.length, 1);
    assert.equal(r.entries[0].fields[Attr.sandboxId], 'other');
  });
});
