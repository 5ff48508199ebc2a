// The node's cumulative counts reach the anonymized report: a real orchestrator (real crun sandboxes and build)
// sends OTLP to a real collector process (`packages/collector`, as `cove up` runs it), whose report goes to a real
// HTTP server standing in for the control plane's intake. A build that fails moves `builds.failed`; a build in
// progress shows in `builds.running`; a sandbox paused with its memory kept on the node is `sandboxes.paused`
// until it is resumed. Every report passes the strict schema and carries none of the ids the node used.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { BuildState, TemplateService } from '@cove/contracts/orchestrator';
import { ClusterMetricsReport } from '@cove/contracts/telemetry';
import { NODE_TOKEN, PACKAGE_DIR, bearer, instance, rpcClients, spec, startOrchestrator, teardown, waitFor, type Running } from './orchestrator-fixture.js';
import { freePort } from '@cove/test-support/free-port';

const I = instance('covtrep', 'crp-', '10.205.0.0/16');
const COLLECTOR_TOKEN = 'collector-token-for-the-report-test';
const CLUSTER_TOKEN = 'cluster-token-for-the-report-test';
const COLLECTOR_MAIN = join(PACKAGE_DIR, '..', 'collector', 'dist', 'src', 'main.js');
// Ids the node stamps on what it sends; none may reach the report.
const TEAM = 'team-REPORTCANARY';
const TEMPLATE = 'tpl-reportcanary';
const BUILD = 'bld-reportcanary';

describe('node counts in the anonymized report', () => {
  let intake: Server;
  const reports: ClusterMetricsReport[] = [];
  const raw: string[] = [];
  let collector: ChildProcess;
  let collectorOut = '';
  let dataDir: string;
  let node: Running;

  before(async () => {
    await teardown(I);
    intake = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        raw.push(body);
        const parsed = ClusterMetricsReport.safeParse(JSON.parse(body));
        if (parsed.success && req.headers.authorization === `Bearer ${CLUSTER_TOKEN}`) reports.push(parsed.data);
        res.statusCode = parsed.success ? 204 : 400;
        res.end();
      });
    });
    await new Promise<void>((r) => intake.listen(0, '127.0.0.1', r));
    const intakePort = (intake.address() as { port: number }).port;

    dataDir = mkdtempSync(join(tmpdir(), 'cove-report-collector-'));
    const port = await freePort();
    collector = spawn(process.execPath, [COLLECTOR_MAIN], {
      env: {
        PATH: process.env.PATH ?? '',
        COVE_DATA_DIR: dataDir,
        COVE_COLLECTOR_TOKEN: COLLECTOR_TOKEN,
        COVE_COLLECTOR_PORT: String(port),
        COVE_CONTROL_PLANE_URL: `http://127.0.0.1:${intakePort}`,
        COVE_CLUSTER_TOKEN: CLUSTER_TOKEN,
        COVE_REPORT_INTERVAL_MS: '1000',
        COVE_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    collector.stdout!.on('data', (b: Buffer) => (collectorOut += b.toString()));
    collector.stderr!.on('data', (b: Buffer) => (collectorOut += b.toString()));
    const url = `http://127.0.0.1:${port}`;
    assert.ok(await waitFor(() => fetch(`${url}/health`).then((r) => r.ok, () => false), 15_000), `collector not healthy: ${collectorOut}`);

    node = await startOrchestrator(I, {
      COVE_COLLECTOR_URL: url,
      COVE_COLLECTOR_TOKEN: COLLECTOR_TOKEN,
      COVE_TELEMETRY_METRIC_INTERVAL_MS: '300',
    });
  });

  after(async () => {
    await node?.close();
    collector?.kill('SIGTERM');
    await new Promise<void>((r) => intake?.close(() => r()));
    rmSync(dataDir, { recursive: true, force: true });
    await teardown(I);
  });

  /** Reports received from now on. */
  const from = () => {
    const start = reports.length;
    return () => reports.slice(start);
  };

  it('a failed build moves builds.failed; a running one shows in builds.running; no id leaves', { timeout: 180_000 }, async () => {
    assert.ok(await waitFor(() => reports.some((r) => r.nodes.length === 1 && r.nodes[0].healthy), 20_000), `no report with the node: ${collectorOut}`);
    const since = from();
    const c = createClient(TemplateService, createGrpcTransport({ baseUrl: node.rpcUrl, interceptors: [bearer(NODE_TOKEN)] }));
    await c.build({
      templateId: TEMPLATE,
      buildId: BUILD,
      teamId: TEAM,
      source: { case: 'fromBuildId', value: 'base' },
      vcpu: 1,
      memoryMb: 256,
      diskMb: 512,
      steps: [{ type: 'RUN', args: ['echo REPORTCANARY-output; sleep 2; exit 3'] }],
    });
    assert.ok(await waitFor(async () => (await c.buildStatus({ templateId: TEMPLATE, buildId: BUILD, logsOffset: 0 })).state === BuildState.ERROR, 120_000, 250));
    const failed = () => since().reduce((a, r) => a + r.builds.failed, 0);
    assert.ok(await waitFor(() => failed() >= 1, 15_000), `builds.failed never moved: ${JSON.stringify(since())}`);
    assert.equal(failed(), 1, 'one failure, counted once (the report carries increases)');
    assert.equal(since().reduce((a, r) => a + r.builds.succeeded, 0), 0);
    assert.ok(since().some((r) => r.builds.running === 1), 'the build was seen running (it sleeps 2 s)');
    assert.ok(await waitFor(() => since().at(-1)?.builds.running === 0, 10_000), 'and no longer once it ended');
    for (const body of raw) {
      for (const id of ['REPORTCANARY', 'reportcanary', node.config.nodeId]) assert.ok(!body.includes(id), `${id} in a report: ${body}`);
    }
  });

  it('a sandbox paused with its memory on the node is counted as paused until it is resumed', { timeout: 180_000 }, async () => {
    const rpc = rpcClients(node.rpcUrl);
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'rep1', teamId: TEAM, envdAccessToken: 'tok-rep1' }) });
    assert.ok(await waitFor(() => reports.at(-1)?.sandboxes.running === 1, 15_000), JSON.stringify(reports.at(-1)));
    await rpc.sandboxes.pause({ sandboxId: 'rep1', snapshotId: 'snap-rep1', memory: true });
    assert.ok(await waitFor(() => reports.at(-1)?.sandboxes.paused === 1 && reports.at(-1)?.sandboxes.running === 0, 15_000), JSON.stringify(reports.at(-1)));
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'rep1', teamId: TEAM, snapshotId: 'snap-rep1', envdAccessToken: 'tok-rep1' }) });
    assert.ok(await waitFor(() => reports.at(-1)?.sandboxes.paused === 0 && reports.at(-1)?.sandboxes.running === 1, 15_000), JSON.stringify(reports.at(-1)));
    await rpc.sandboxes.delete({ sandboxId: 'rep1' });
    assert.ok(raw.every((b) => !b.includes('rep1') && !b.includes('snap-rep1')));
  });
});
