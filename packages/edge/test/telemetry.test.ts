// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
// The edge's telemetry as a process (dist/src/main.js): its own log lines reach a real OTLP stand-in as
// `cove.log.kind=component` records; /metrics on the API port needs the cluster token and counts requests;
// with the collector gone, the edge keeps serving and counts what it could not send.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { Attr, COMPONENT_LOG_KIND } from '@cove/contracts/telemetry';
import { startOtlpStandIn, type OtlpStandIn } from '@cove/telemetry/testing';
import { eventually } from '@cove/test-support/eventually';
import { metricSample } from '@cove/test-support/prometheus-text';

const MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'main.js');
const CLUSTER_TOKEN = 'cluster-token-for-telemetry-test';

describe('edge telemetry', () => {
  let otlp: OtlpStandIn;
  let child: ChildProcess;
  let api = '';
  let trafficPort = 0;

  before(async () => {
    otlp = await startOtlpStandIn();
    // A control plane that is not there: a traffic request for an unknown sandbox then logs (info and warn).
    const closed = createServer().listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    child = spawn(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH ?? '',
        COVE_EDGE_ID: 'edge-tel',
        COVE_EDGE_API_PORT: '0',
        COVE_EDGE_TRAFFIC_PORT: '0',
        COVE_CLUSTER_TOKEN: CLUSTER_TOKEN,
        COVE_NODE_CREDENTIAL_KEY: 'node-credential-key-for-telemetry-test-0123',
        COVE_SANDBOX_DOMAIN: 'cove.test',
        COVE_STORAGE_URL: pathToFileURL(join(tmpdir(), 'cove-edge-telemetry-test-storage')).href,
        COVE_UPLOAD_SECRET: 'upload-secret-for-telemetry-test-0123456789',
        COVE_COLLECTOR_URL: otlp.url,
        COVE_COLLECTOR_TOKEN: 'collector-token-edge',
        COVE_CONTROL_PLANE_URL: `http://127.0.0.1:${deadPort}`,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    for await (const line of createInterface({ input: child.stdout! })) {
      const rec = JSON.parse(line) as { apiPort?: number; trafficPort?: number };
      if (rec.apiPort) {
        api = `http://127.0.0.1:${rec.apiPort}`;
        trafficPort = rec.trafficPort!;
        break;
      }
    }
    child.stdout!.resume();
  });

  after(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
    await otlp.close().catch(() => undefined);
  });

  const metrics = async (token: string | null) => fetch(`${api}/metrics`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });

  it('sends its own log lines as component records of service cove-edge', async () => {
    const rec = await eventually(() => otlp.logs().find((l) => l.body === 'edge listening'), 20_000, 'the edge listening record');
    assert.equal(rec.attributes[Attr.logKind], COMPONENT_LOG_KIND);
    assert.equal(rec.resource[Attr.serviceName], 'cove-edge');
    assert.equal(rec.resource[Attr.serviceInstanceId], 'edge-tel');
    assert.equal(typeof rec.attributes.apiPort, 'number');
    assert.ok(otlp.posts.every((p) => p.authorization === 'Bearer collector-token-edge'));
    assert.ok(!JSON.stringify(otlp.posts).includes(CLUSTER_TOKEN), 'no secret in what is sent');
  });

  it('/metrics needs the cluster token and counts requests by route and status', async () => {
    assert.equal((await fetch(`${api}/health`)).status, 503);
    assert.equal((await metrics(null)).status, 401);
    assert.equal((await metrics('wrong-token')).status, 403);
    const res = await metrics(CLUSTER_TOKEN);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok((metricSample(text, 'cove_http_requests_total', { operation: 'GET /health', outcome: '503', component: 'edge' }) ?? 0) >= 1, text);
    assert.ok((metricSample(text, 'cove_http_requests_total', { operation: 'GET /metrics', outcome: '401' }) ?? 0) >= 1);
    assert.ok((metricSample(text, 'cove_http_requests_total', { operation: 'GET /metrics', outcome: '403' }) ?? 0) >= 1);
    assert.equal(metricSample(text, 'cove_telemetry_dropped_total', { signal: 'logs' }), 0);
  });

  it('with the collector gone the edge keeps serving and counts what it dropped', async () => {
    await otlp.close();
    const logged = async () => {
      const r = await request(`http://127.0.0.1:${trafficPort}/`, { headers: { host: '49983-nosuchsandbox.cove.test' } });
      await r.body.dump();
      return r.statusCode;
    };
    for (let i = 0; i < 3; i++) assert.ok((await logged()) >= 400);
    assert.equal((await fetch(`${api}/health`)).status, 503, 'the API port still answers');
    await eventually(async () => {
      const r = await metrics(CLUSTER_TOKEN);
      assert.equal(r.status, 200);
      return (metricSample(await r.text(), 'cove_telemetry_dropped_total', { signal: 'logs' }) ?? 0) > 0;
    }, 40_000, 'the dropped counter to rise');
  });
});
