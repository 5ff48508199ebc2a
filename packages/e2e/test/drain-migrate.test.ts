// Issue 15 (autoscaler's core): draining a node moves its sandboxes to another node with their memory — through the
// unchanged SDK, whose handle keeps working. A process counting in memory goes on from where it was (same pid,
// never from 1 again), a file is still there, the drained node reports empty and goes back into service. Then the
// same with the draining node's orchestrator killed (-9) in the middle of the migration and started again: the
// sandbox is never lost, and the drain finishes the move.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment, eventually, repoRoot, type Deployment } from './deployment.js';
import { allNodesHealthy, nodeOf } from './nodes.js';

const run = promisify(execFile);

interface DrainView {
  status: 'running' | 'done';
  empty: boolean | null;
  remaining: string[];
  sandboxes: Array<{ sandboxId: string; state: string; toNodeId?: string; reason?: string }>;
}

async function admin(d: Deployment, method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await request(`${d.env.E2B_API_URL}${path}`, {
    method,
    headers: { 'x-admin-token': d.secrets.adminToken, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.body.text();
  return { status: r.statusCode, body: text ? JSON.parse(text) : undefined };
}

/** A python process counting in memory into /tmp/n (a cold restart would count from 1 again); returns its pid. */
async function counting(sbx: Sandbox): Promise<number> {
  await sbx.files.write('/home/user/count.py', ['import os, time', 'n = 0', 'while True:', '    n += 1', '    open("/tmp/n.tmp", "w").write(str(n)); os.replace("/tmp/n.tmp", "/tmp/n")', '    time.sleep(0.1)'].join('\n'));
  const h = await sbx.commands.run('python3 /home/user/count.py', { background: true });
  await eventually(async () => /^\d+$/.test(await sbx.files.read('/tmp/n').catch(() => '')), 20_000, 'the counter to start');
  return h.pid;
}

/** `cove <args>` against this deployment, as a process; its stdout (a non-zero exit fails the test). */
async function cove(...args: string[]): Promise<string> {
  const d = deployment();
  const { stdout } = await run(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), ...args, '--state-dir', d.stateDir, '--port-offset', '100'], { timeout: 240_000 });
  return stdout;
}

const count = async (sbx: Sandbox) => Number(await sbx.files.read('/tmp/n'));

describe('draining a node migrates its sandboxes with their memory (unchanged SDK)', () => {
  const made: Sandbox[] = [];
  let d: Deployment;
  let clusterId: string;
  before(async () => {
    d = deployment();
    const clusters = await admin(d, 'GET', '/admin/clusters');
    assert.equal(clusters.status, 200);
    clusterId = clusters.body[0].id;
  });
  after(async () => {
    for (const n of d.nodes) await admin(d, 'POST', `/admin/clusters/${clusterId}/nodes/${n.nodeId}/undrain`).catch(() => undefined);
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  const drainPath = (nodeId: string) => `/admin/clusters/${clusterId}/nodes/${nodeId}/drain`;
  const drainDone = (nodeId: string, timeoutMs: number) =>
    eventually(async () => {
      const v = (await admin(d, 'GET', drainPath(nodeId))).body as DrainView;
      return v.status === 'done' ? v : undefined;
    }, timeoutMs, `the drain of ${nodeId} to finish`);

  /** A sandbox with a counting process and a file; where it runs. */
  async function prepared(): Promise<{ sbx: Sandbox; pid: number; canary: string; from: Deployment['nodes'][number]; to: Deployment['nodes'][number] }> {
    const sbx = await Sandbox.create({ timeoutMs: 600_000 });
    made.push(sbx);
    const canary = randomBytes(8).toString('hex');
    await sbx.files.write('/home/user/keep.txt', canary);
    const pid = await counting(sbx);
    const port = await nodeOf(d, sbx.sandboxId);
    const from = d.nodes.find((n) => n.rpcPort === port)!;
    const to = d.nodes.find((n) => n !== from)!;
    assert.ok(from && to, 'two nodes, the sandbox on one of them');
    return { sbx, pid, canary, from, to };
  }

  /** The same SDK handle sees the same process counting on from `before`, and the file. */
  async function intact(sbx: Sandbox, pid: number, canary: string, before: number): Promise<void> {
    const n1 = await eventually(async () => count(sbx).catch(() => undefined), 30_000, 'the sandbox to answer after the move');
    assert.ok(n1 >= before, `the counter went on from ${before} (now ${n1}): memory kept, not restarted`);
    await eventually(async () => (await count(sbx)) > n1, 10_000, 'the counter to keep counting');
    assert.equal((await sbx.commands.run(`cat /proc/${pid}/cmdline | tr '\\0' ' '`)).stdout.trim(), 'python3 /home/user/count.py', 'the same process (same pid)');
    assert.equal(await sbx.files.read('/home/user/keep.txt'), canary);
  }

  test('drain with migration: the sandbox moves with its running process and files; the node reports empty; un-drain', { timeout: 300_000 }, async () => {
    const { sbx, pid, canary, from, to } = await prepared();
    const before = await count(sbx);
    assert.ok(before > 0);

    // The operator's way: `cove node drain` (a process) prints the progress and exits 0 once the node is empty.
    const out = await cove('node', 'drain', from.nodeId, '--timeout', '120');
    assert.match(out, new RegExp(`sandbox ${sbx.sandboxId}: moved → ${to.nodeId}`));
    assert.match(out, new RegExp(`node ${from.nodeId} is empty: it can leave the cluster`));
    const v = (await admin(d, 'GET', drainPath(from.nodeId))).body as DrainView;
    assert.equal(v.status, 'done');
    const m = v.sandboxes.find((x) => x.sandboxId === sbx.sandboxId);
    assert.equal(m?.state, 'moved', JSON.stringify(v));
    assert.equal(m?.toNodeId, to.nodeId);
    assert.equal(v.empty, true, JSON.stringify(v.remaining));

    assert.equal(await nodeOf(d, sbx.sandboxId), to.rpcPort, 'it runs on the other node now');
    await intact(sbx, pid, canary, before);
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running');

    // Back into service: the edge (which placement asks) sees both nodes healthy again.
    assert.match(await cove('node', 'undrain', from.nodeId), /back in service/);
    await allNodesHealthy(d, 30_000);
  });

  test('the draining node\'s orchestrator is killed (-9) mid-migration: nothing is lost, and the drain finishes the move', { timeout: 600_000 }, async () => {
    const { sbx, pid, canary, from, to } = await prepared();
    const before = await count(sbx);
    const index = d.nodes.indexOf(from);
    const name = index === 0 ? 'orchestrator' : `orchestrator-${index + 1}`;
    const { pid: nodePid } = JSON.parse(readFileSync(join(d.stateDir, 'run', `${name}.pid`), 'utf8')) as { pid: number };

    const started = await admin(d, 'POST', drainPath(from.nodeId), { migrate: true, timeoutSeconds: 420 });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    // The failure lands while the drain works on the sandbox (capacity check, CRIU dump or the resume).
    await eventually(async () => ((await admin(d, 'GET', drainPath(from.nodeId))).body as DrainView).sandboxes.some((x) => x.sandboxId === sbx.sandboxId && x.state === 'moving'), 60_000, 'the migration to start', 20);
    process.kill(nodePid, 'SIGKILL');
    await eventually(() => { try { process.kill(nodePid, 0); return false; } catch { return true; } }, 30_000, 'the node process to die');

    // Start the node again, as `cove up` does; the restarted node resolves its pause intent.
    execFileSync(
      process.execPath,
      [join(repoRoot, 'packages/cli/dist/src/main.js'), 'up', '--state-dir', d.stateDir, '--port-offset', '100', '--code-interpreter-wait', '0', '--nodes', String(d.nodes.length)],
      { stdio: 'ignore' },
    );
    const v = await drainDone(from.nodeId, 480_000);
    const m = v.sandboxes.find((x) => x.sandboxId === sbx.sandboxId);
    assert.equal(m?.state, 'moved', JSON.stringify(v));
    assert.equal(m?.toNodeId, to.nodeId);
    assert.equal(v.empty, true, JSON.stringify(v.remaining));
    assert.equal(await nodeOf(d, sbx.sandboxId), to.rpcPort);
    await intact(sbx, pid, canary, before);

    assert.equal((await admin(d, 'POST', `/admin/clusters/${clusterId}/nodes/${from.nodeId}/undrain`)).status, 200);
    await allNodesHealthy(d, 60_000);
  });
});
