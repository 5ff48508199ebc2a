// Outbound-only control link (issue 15, docs/operating.md): `cove up --outbound-link` (the CLI as a process) turns
// the running deployment around — the edge dials the control plane and the cluster is registered as
// `outbound://local`, so the control plane holds no address of the cluster at all — and the unchanged SDK creates,
// runs and kills sandboxes through it. The control plane is then stopped and started again (the link drops and
// the edge re-dials): a sandbox made before keeps running and answering the SDK throughout, and creates work again
// once the link is back. A last `cove up` without the flag returns the deployment to the direct link.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { eventually } from '@cove/test-support/eventually';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment, E2E_PORT_OFFSET, repoRoot, type Deployment } from './deployment.js';

let d: Deployment;
before(() => {
  d = deployment();
});

function coveUp(extra: string[]): Promise<{ code: number | null; out: string }> {
  const args = ['up', '--state-dir', d.stateDir, '--port-offset', String(E2E_PORT_OFFSET), '--nodes', String(d.nodes.length), '--code-interpreter-wait', '0', '--desktop-wait', '0', ...extra];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, out }));
  });
}

async function localCluster(): Promise<{ endpoint: string }> {
  const res = await request(`${d.env.E2B_API_URL}/admin/clusters`, { headers: { 'x-admin-token': d.secrets.adminToken } });
  const body = (await res.body.json()) as Array<{ name: string; endpoint: string }> | { clusters: Array<{ name: string; endpoint: string }> };
  const list = Array.isArray(body) ? body : body.clusters;
  const c = list.find((x) => x.name === 'local');
  assert.ok(c, 'cluster "local" is registered');
  return c;
}

const edgeLog = () => readFileSync(join(d.stateDir, 'logs', 'edge.log'), 'utf8');
const linkOpens = () => edgeLog().split('\n').filter((l) => l.includes('control link open (outbound)')).length;
const pidOf = (name: string) => (JSON.parse(readFileSync(join(d.stateDir, 'run', `${name}.pid`), 'utf8')) as { pid: number }).pid;

after(async () => {
  // Back to the direct link for the files that run after this one.
  const r = await coveUp([]);
  assert.equal(r.code, 0, r.out);
});

test('outbound-only: the SDK creates, runs and kills sandboxes; a control plane restart drops the link and the edge re-dials', { timeout: 300_000 }, async () => {
  const up = await coveUp(['--outbound-link']);
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /outbound-only: the edge dials the control plane/);
  // The control plane knows no address of the cluster: whatever it sends the cluster goes over the edge's link.
  assert.equal((await localCluster()).endpoint, 'outbound://local');
  await eventually(() => linkOpens() > 0, 60_000, 'the edge to open its link');

  // Nodes come back to the restarted edge with their next heartbeat; until then a create finds no capacity.
  const sbx = await eventually(() => Sandbox.create({ timeoutMs: 300_000 }), 60_000, 'a create over the outbound link', 1_000);
  try {
    const r = await sbx.commands.run('echo outbound-$((6*7))');
    assert.equal(r.stdout.trim(), 'outbound-42');
    await sbx.files.write('/tmp/kept.txt', 'still here');

    // Drop the link: stop the control plane (SIGTERM, as an operator's restart would).
    const opensBefore = linkOpens();
    const cp = pidOf('control-plane');
    process.kill(cp, 'SIGTERM');
    await eventually(() => {
      try {
        process.kill(cp, 0);
        return false;
      } catch {
        return true;
      }
    }, 30_000, 'the control plane to stop');
    await eventually(() => edgeLog().includes('control link closed; re-dialling'), 30_000, 'the edge to notice the drop');
    // With the control plane down, the sandbox runs on and SDK traffic (edge → node, no control plane) flows.
    assert.equal((await sbx.commands.run('cat /tmp/kept.txt')).stdout, 'still here');

    const again = await coveUp(['--outbound-link']);
    assert.equal(again.code, 0, again.out);
    await eventually(() => linkOpens() > opensBefore, 60_000, 'the edge to re-dial');
    assert.equal((await sbx.commands.run('cat /tmp/kept.txt')).stdout, 'still here');
    // The control plane's calls work again over the new link: extend the running sandbox, create another.
    await sbx.setTimeout(240_000);
    const second = await Sandbox.create({ timeoutMs: 120_000 });
    assert.equal((await second.commands.run('echo second')).stdout.trim(), 'second');
    await second.kill();
  } finally {
    await sbx.kill();
  }
  assert.equal(await Sandbox.connect(sbx.sandboxId).then(() => 'alive', () => 'gone'), 'gone');
});
