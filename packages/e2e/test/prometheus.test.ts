// Issue 11 with a real backend: the Debian package's Prometheus (2.42, installed by ./cove) scrapes every Cove
// component's /metrics with the bearer token each one expects — control plane (admin token), edge API port
// (cluster token), each orchestrator node's proxy port (that node's own derived token), collector (collector
// token) — and a job per component with a wrong token is refused (up == 0, no Cove series stored).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { deriveNodeToken } from '@cove/auth-tokens';
import { deployment, eventually } from './deployment.js';
import { freePort } from '@cove/test-support/free-port';

interface Target {
  job: string;
  port: number;
  token: string;
  /** A series only this component serves: proof the scrape reached Cove's registry, not just a 200. */
  series: string;
}

type Vector = Array<{ metric: Record<string, string>; value: [number, string] }>;

describe('a real Prometheus scrapes every component with its bearer token', () => {
  let dir: string;
  let prom: ChildProcess | undefined;
  let promLog = '';
  let api: string;
  let targets: Target[];

  async function query(q: string): Promise<Vector> {
    const res = await request(`${api}/api/v1/query?query=${encodeURIComponent(q)}`, { headersTimeout: 5000, bodyTimeout: 5000 });
    const body = (await res.body.json()) as { status: string; data?: { result: Vector }; error?: string };
    assert.equal(body.status, 'success', `query ${q}: ${body.error}`);
    return body.data!.result;
  }

  before(async () => {
    const d = deployment();
    // The e2e fixture's Deployment carries only what other tests use; the collector's port and token are in the same files.
    const topology = JSON.parse(readFileSync(join(d.stateDir, 'topology.json'), 'utf8')) as { ports: { collector: number } };
    const secrets = JSON.parse(readFileSync(join(d.stateDir, 'secrets.json'), 'utf8')) as { collectorToken: string };
    targets = [
      { job: 'cove-control-plane', port: d.ports.controlPlane, token: d.secrets.adminToken, series: 'cove_cp_live_sandboxes' },
      { job: 'cove-edge', port: d.ports.edgeApi, token: d.secrets.clusterToken, series: 'cove_edge_nodes' },
      ...d.nodes.map((n) => ({ job: `cove-orchestrator-${n.nodeId}`, port: n.proxyPort, token: deriveNodeToken(d.secrets.nodeCredentialKey, n.nodeId), series: 'cove_sandboxes' })),
      { job: 'cove-collector', port: topology.ports.collector, token: secrets.collectorToken, series: 'cove_collector_stored_bytes' },
    ];
    dir = mkdtempSync(join(tmpdir(), 'cove-prometheus-'));
    const job = (name: string, t: Target, credentials: string) => ({
      job_name: name,
      scrape_interval: '1s',
      scrape_timeout: '1s',
      authorization: { type: 'Bearer', credentials },
      static_configs: [{ targets: [`127.0.0.1:${t.port}`] }],
    });
    // One wrong-token job per component: the other node's token for a node (a real token, just not this node's).
    const wrong = (t: Target, i: number) => {
      if (t.job.startsWith('cove-orchestrator-') && targets.length > 1) {
        const other = targets.filter((o) => o.job.startsWith('cove-orchestrator-') && o !== t)[0];
        if (other) return other.token;
      }
      return `wrong-${i}-${t.token.slice(0, 8)}x`;
    };
    const config = {
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      scrape_configs: [...targets.map((t) => job(t.job, t, t.token)), ...targets.map((t, i) => job(`wrong-${t.job}`, t, wrong(t, i)))],
    };
    // JSON is YAML; the file holds every token, so only its owner reads it.
    const configFile = join(dir, 'prometheus.yml');
    writeFileSync(configFile, JSON.stringify(config, null, 2), { mode: 0o600 });
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    prom = spawn('prometheus', [`--config.file=${configFile}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (b: Buffer) => (promLog = (promLog + b.toString()).slice(-8192));
    prom.stdout!.on('data', keep);
    prom.stderr!.on('data', keep);
    prom.on('error', (err) => (promLog += `\nspawn failed: ${err.message}`));
    await eventually(async () => {
      if (prom!.exitCode !== null) throw new Error(`prometheus exited ${prom!.exitCode}: ${promLog}`);
      const res = await request(`${api}/-/ready`).catch(() => undefined);
      if (!res) return false;
      await res.body.dump();
      return res.statusCode === 200;
    }, 30_000, 'prometheus ready');
  });

  after(async () => {
    if (prom && prom.exitCode === null) {
      const exited = new Promise((resolve) => prom!.once('exit', resolve));
      prom.kill('SIGTERM');
      await exited;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('every component is up with its token and serves its Cove series; every wrong token is refused', { timeout: 90_000 }, async () => {
    const jobs = targets.map((t) => t.job);
    const wrongJobs = jobs.map((j) => `wrong-${j}`);
    const up = await eventually(async () => {
      const v = await query('up');
      const byJob = new Map(v.map((s) => [s.metric['job']!, s.value[1]]));
      return [...jobs, ...wrongJobs].every((j) => byJob.has(j)) && jobs.every((j) => byJob.get(j) === '1') ? byJob : undefined;
    }, 60_000, `every target up (prometheus log: ${promLog.slice(-1000)})`);
    for (const j of wrongJobs) assert.equal(up.get(j), '0', `${j} must not be scraped`);

    // Why the wrong jobs are down: the component refused the token (401/403), not a connection failure.
    const res = await request(`${api}/api/v1/targets?state=active`);
    const targetsBody = (await res.body.json()) as { data: { activeTargets: Array<{ labels: Record<string, string>; health: string; lastError: string }> } };
    for (const t of targetsBody.data.activeTargets.filter((a) => a.labels['job']!.startsWith('wrong-'))) {
      assert.equal(t.health, 'down');
      assert.match(t.lastError, /server returned HTTP status 40[13]/, `${t.labels['job']}: ${t.lastError}`);
    }

    const counts: string[] = [];
    for (const t of targets) {
      const v = await query(`${t.series}{job="${t.job}"}`);
      assert.ok(v.length > 0, `${t.series} scraped from ${t.job}`);
      const all = await query(`count({job="${t.job}", __name__=~"cove_.+"})`);
      assert.ok(Number(all[0]?.value[1]) > 0, `${t.job} serves Cove's series`);
      counts.push(`${t.job}=${all[0]!.value[1]}`);
    }
    // The orchestrator's and edge's samples say which component they come from.
    for (const n of deployment().nodes) assert.equal((await query(`cove_sandboxes{job="cove-orchestrator-${n.nodeId}"}`))[0]!.metric['component'], 'orchestrator');
    // The edge counts the deployment's nodes as it sees them.
    const edgeNodes = await query('sum(cove_edge_nodes{job="cove-edge"})');
    assert.ok(Number(edgeNodes[0]?.value[1]) >= deployment().nodes.length, `edge sees the nodes: ${JSON.stringify(edgeNodes)}`);
    // A refused scrape stores nothing of Cove's (only Prometheus's own synthetic up/scrape_* series).
    const leaked = await query('count({job=~"wrong-.+", __name__=~"cove_.+"})');
    assert.equal(leaked.length, 0, `a wrong token got Cove series: ${JSON.stringify(leaked)}`);
    console.log(`prometheus: ${jobs.length} targets up, ${wrongJobs.length} wrong-token targets down; cove_ series per job: ${counts.join(' ')}`);
  });
});
