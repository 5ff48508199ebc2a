// Issue 11, control-plane and edge side: log, metric and build-status routes reach the cluster without passing
// through the control plane. The unchanged SDK follows the control plane's 307 to the edge's public port (with a
// short-lived grant): build logs stream through it, a failed build's reason recorded by the control plane holds
// the step and exit code but none of the step's output, sandbox metrics and logs answer from the cluster's
// collector, and another team gets 404 without a redirect.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { BuildError, Sandbox, Template, type LogEntry } from 'e2b';
import { request } from 'undici';
import { deployment, eventually } from './deployment.js';

const BUILD_TIMEOUT = 240_000;

describe('observability routes: redirect to the cluster with a grant', () => {
  const tag = randomBytes(4).toString('hex');
  let sbx: Sandbox;
  let otherKey: string;
  const api = async (path: string, key: string) => {
    const d = deployment();
    const res = await request(`${d.env.E2B_API_URL}${path}`, { headers: { 'x-api-key': key } });
    const text = await res.body.text();
    return { status: res.statusCode, location: res.headers.location as string | undefined, text };
  };

  before(async () => {
    const d = deployment();
    sbx = await Sandbox.create({ timeoutMs: 120_000 });
    const state = JSON.parse(readFileSync(`${d.stateDir}/state.json`, 'utf8')) as { clusterId: string };
    const res = await request(`${d.env.E2B_API_URL}/admin/teams`, {
      method: 'POST',
      headers: { 'x-admin-token': d.secrets.adminToken, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `obs-other-${Date.now()}`, clusterId: state.clusterId }),
    });
    const team = (await res.body.json()) as { apiKey: { key: string } };
    assert.equal(res.statusCode, 201);
    otherKey = team.apiKey.key;
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
  });

  test('the control plane answers 307 to the edge public port; the grant is required there; another team gets 404', async () => {
    const d = deployment();
    const key = d.env.E2B_API_KEY;
    for (const path of [`/v2/sandboxes/${sbx.sandboxId}/logs?limit=5000`, `/sandboxes/${sbx.sandboxId}/logs`, `/sandboxes/${sbx.sandboxId}/metrics`, `/sandboxes/metrics?sandbox_ids=${sbx.sandboxId}`]) {
      const r = await api(path, key);
      assert.equal(r.status, 307, `${path}: ${r.text}`);
      const loc = new URL(r.location!);
      assert.notEqual(loc.port, String(d.ports.controlPlane), 'the redirect leaves the control plane');
      assert.ok(loc.searchParams.get('cove_grant'));
      if (path.includes('limit=')) assert.equal(loc.searchParams.get('limit'), '1000', 'limits are clamped');
      // Following it: an answer from the cluster's collector.
      const follow = await request(loc);
      const body = (await follow.body.json()) as { code?: number; message?: string };
      assert.equal(follow.statusCode, 200, `${path} → ${follow.statusCode} ${JSON.stringify(body)}`);
      // Without its grant the public port serves nothing.
      loc.searchParams.delete('cove_grant');
      const bare = await request(loc);
      assert.equal(bare.statusCode, 401);
      assert.equal(((await bare.body.json()) as { code: number }).code, 401);
      const other = await api(path, otherKey);
      assert.equal(other.status, 404, `${path} for another team: ${other.text}`);
      assert.equal(other.location, undefined);
    }
    const bad = await api(`/v2/sandboxes/${sbx.sandboxId}/logs?cursor=yesterday`, key);
    assert.equal(bad.status, 400);
    assert.match(bad.text, /cursor must be a non-negative integer/);
  });

  test('the unchanged SDK follows the redirect: getMetrics answers from the cluster', async () => {
    const samples = await sbx.getMetrics();
    assert.ok(Array.isArray(samples));
  });

  test('build logs stream through the redirect; a failed build keeps its output in the cluster only', { timeout: BUILD_TIMEOUT }, async () => {
    const canary = `cove-canary-${randomBytes(6).toString('hex')}`;
    const logs: LogEntry[] = [];
    const ok = Template().fromTemplate('base').runCmd(`echo ok-${canary}`);
    await Template.build(ok, `e2e-obs-${tag}`, { cpuCount: 1, memoryMB: 512, onBuildLogs: (e) => logs.push(e) });
    assert.match(logs.map((e) => e.message).join('\n'), new RegExp(`ok-${canary}`), 'RUN output reached the SDK through the edge');
    // The template is usable at once: the control plane settles the build it had not recorded as ready yet.
    const made = await Sandbox.create(`e2e-obs-${tag}`, { timeoutMs: 60_000 });
    await made.kill();

    const failName = `e2e-obs-fail-${tag}`;
    const failLogs: LogEntry[] = [];
    const failing = Template().fromTemplate('base').runCmd(`echo fail-${canary} >&2; exit 7`);
    await assert.rejects(Template.build(failing, failName, { onBuildLogs: (e) => failLogs.push(e) }), (err: unknown) => {
      assert.ok(err instanceof BuildError, String(err));
      assert.match((err as Error).message, /exit code 7/);
      return true;
    });
    assert.match(failLogs.map((e) => e.message).join('\n'), new RegExp(`fail-${canary}`), 'the output is in the build log');
    // What the control plane recorded (shown when a sandbox is asked of the failed template): step and exit code only.
    const d = deployment();
    const recorded = await eventually(async () => {
      const res = await request(`${d.env.E2B_API_URL}/sandboxes`, {
        method: 'POST',
        headers: { 'x-api-key': d.env.E2B_API_KEY, 'content-type': 'application/json' },
        body: JSON.stringify({ templateID: failName }),
      });
      const text = await res.body.text();
      return res.statusCode === 400 && /exit code 7/.test(text) ? text : undefined;
    }, 30_000, 'the failed build recorded by the control plane');
    assert.ok(!recorded.includes(canary), `the control plane holds step output: ${recorded}`);
    // The control plane's request log saw the 307s, never the log lines.
    const requestLog = readFileSync(d.requestLog, 'utf8');
    assert.ok(!requestLog.includes(canary), 'no canary in the control plane request log');
    assert.ok(requestLog.split('\n').some((l) => l.includes('/builds/') && l.includes('"status":307')));
  });
});
