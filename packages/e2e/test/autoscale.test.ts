// Issue 15: `cove up --autoscale` with the local provider on the suite's two-node deployment, through the
// unchanged SDK. Idleness removes a node — drained first, its sandbox moving with a running process and a file,
// even when the leaving node's orchestrator is killed (-9) in the middle of the migration (the autoscaler starts it
// again and the drain finishes); a burst of creates adds a node; maxNodes, the scale-in cooldown and minNodes hold.
// The deployment is left as it was found: autoscaler stopped, both nodes running.
//
// Sizes: each node has 2 CPUs here and a sandbox 2 vCPUs; the autoscaler is told the nodes place 4 vCPUs per CPU
// (--cpu-overcommit 4), so a node holds 4 sandboxes by its count and two sandboxes make a burst. The nodes
// themselves keep their own (larger) overcommit: every create succeeds.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment, E2E_EGRESS_DNS, E2E_UPSTREAM_CA_FILE, eventually, repoRoot, type Deployment } from './deployment.js';
import { allNodesHealthy, nodeClients, setDraining } from './nodes.js';

const run = promisify(execFile);

interface ScalingEvent {
  at: number;
  action: 'launched' | 'draining' | 'terminated' | 'returned';
  nodeId: string;
  reason: string;
}
interface AutoscalerStatus {
  provider: string;
  nodes: string[];
  leaving: string | null;
  lastDecision: { action: string; reason: string; at: number } | null;
  lastError: string | null;
  steps: number;
  events: ScalingEvent[];
}
interface DrainView {
  status: 'running' | 'done';
  empty: boolean | null;
  remaining: string[];
  sandboxes: Array<{ sandboxId: string; state: string; toNodeId?: string }>;
}

// Long enough that a scale in ignoring it would land well inside it (the burst's sandboxes end a few seconds after
// the scale out and the autoscaler looks every second), short enough that waiting it out is not most of the file.
const SCALE_IN_COOLDOWN_S = 20;

/** `cove <args>` against this deployment, as a process (with the suite's egress settings, as `cove test` runs it). */
async function cove(d: Deployment, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), ...args, '--state-dir', d.stateDir, '--port-offset', '100'], {
    timeout: 600_000,
    env: { ...process.env, COVE_EGRESS_DNS: process.env.COVE_EGRESS_DNS ?? E2E_EGRESS_DNS, COVE_EGRESS_UPSTREAM_CA: process.env.COVE_EGRESS_UPSTREAM_CA ?? join(d.stateDir, E2E_UPSTREAM_CA_FILE) },
  });
  return stdout;
}

async function admin(d: Deployment, method: 'GET' | 'POST', path: string): Promise<{ status: number; body: any }> {
  const r = await request(`${d.env.E2B_API_URL}${path}`, { method, headers: { 'x-admin-token': d.secrets.adminToken } });
  const text = await r.body.text();
  return { status: r.statusCode, body: text ? JSON.parse(text) : undefined };
}

/** The autoscaler's own report (GET /status on its port, 3005 + offset). */
async function status(): Promise<AutoscalerStatus> {
  const r = await request('http://127.0.0.1:3105/status');
  assert.equal(r.statusCode, 200);
  return (await r.body.json()) as AutoscalerStatus;
}

const eventOf = (st: AutoscalerStatus, action: ScalingEvent['action'], nodeId?: string, after = 0) =>
  st.events.find((e) => e.action === action && (nodeId === undefined || e.nodeId === nodeId) && e.at >= after);

/** Whether the sandbox runs on the node at `rpcPort` (asked of that node only: another may be stopped). */
async function runsOn(d: Deployment, rpcPort: number, sandboxId: string): Promise<boolean> {
  return (await nodeClients(d, rpcPort).sandboxes.list({})).sandboxes.some((s) => s.sandboxId === sandboxId);
}

/** A python process counting in memory into /tmp/n (a cold restart would count from 1 again); returns its pid. */
async function counting(sbx: Sandbox): Promise<number> {
  await sbx.files.write('/home/user/count.py', ['import os, time', 'n = 0', 'while True:', '    n += 1', '    open("/tmp/n.tmp", "w").write(str(n)); os.replace("/tmp/n.tmp", "/tmp/n")', '    time.sleep(0.1)'].join('\n'));
  // No command timeout: the SDK's default (60 s) would end the counter between two scale ins, as E2B's envd does.
  const h = await sbx.commands.run('python3 /home/user/count.py', { background: true, timeoutMs: 0 });
  await eventually(async () => /^\d+$/.test(await sbx.files.read('/tmp/n').catch(() => '')), 20_000, 'the counter to start');
  return h.pid;
}
const count = async (sbx: Sandbox) => Number(await sbx.files.read('/tmp/n'));

/** The same SDK handle sees the same process counting on from `before`, and the file. */
async function intact(sbx: Sandbox, pid: number, canary: string, before: number): Promise<void> {
  const n1 = await eventually(async () => count(sbx).catch(() => undefined), 30_000, 'the sandbox to answer after the move');
  assert.ok(n1 >= before, `the counter went on from ${before} (now ${n1}): memory kept, not restarted`);
  await eventually(async () => (await count(sbx)) > n1, 10_000, 'the counter to keep counting');
  assert.equal((await sbx.commands.run(`cat /proc/${pid}/cmdline | tr '\\0' ' '`)).stdout.trim(), 'python3 /home/user/count.py', 'the same process (same pid)');
  assert.equal(await sbx.files.read('/home/user/keep.txt'), canary);
}

describe('cove up --autoscale (local provider): scale out on a burst, scale in by draining, limits hold', () => {
  let d: Deployment;
  let clusterId: string;
  let first: Deployment['nodes'][number];
  let second: Deployment['nodes'][number];
  const made: Sandbox[] = [];
  // The sandbox with state that must survive every scale in.
  let kept: { sbx: Sandbox; pid: number; canary: string };

  before(async () => {
    d = deployment();
    assert.equal(d.nodes.length, 2, 'the suite deployment runs two nodes');
    [first, second] = d.nodes as [Deployment['nodes'][number], Deployment['nodes'][number]];
    clusterId = (await admin(d, 'GET', '/admin/clusters')).body[0].id;
  });

  after(async () => {
    await cove(d, 'autoscale', 'stop').catch(() => undefined);
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
    // Both nodes back, as the rest of the suite expects them (a no-op for one still running).
    await cove(d, 'up', '--nodes', '2', '--code-interpreter-wait', '0', '--desktop-wait', '0');
    for (const n of d.nodes) await admin(d, 'POST', `/admin/clusters/${clusterId}/nodes/${n.nodeId}/undrain`).catch(() => undefined);
    await allNodesHealthy(d, 120_000);
  });

  test('bad autoscaler configurations are refused before anything starts', async () => {
    await assert.rejects(cove(d, 'up', '--autoscale', '--min-nodes', '2', '--max-nodes', '1'), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr ?? '', /invalid_autoscaler_config: .*--min-nodes: must not exceed maxNodes \(2 > 1\)/);
      return true;
    });
    // Nothing was started: no autoscaler answers.
    await assert.rejects(status());
  });

  test('idleness removes a node: drained first, its sandbox moves with its running process and files — even with the node killed (-9) mid-drain', { timeout: 900_000 }, async () => {
    // One sandbox on each node (placement steered by draining the other node for the create): the tie between
    // the two nodes goes to the higher id, the second node, which holds the sandbox with state.
    await setDraining(d, first.rpcPort, true);
    const sbx = await Sandbox.create({ timeoutMs: 1_800_000 }).finally(() => setDraining(d, first.rpcPort, false));
    made.push(sbx);
    await setDraining(d, second.rpcPort, true);
    made.push(await Sandbox.create({ timeoutMs: 1_800_000 }).finally(() => setDraining(d, second.rpcPort, false)));
    assert.ok(await runsOn(d, second.rpcPort, sbx.sandboxId));
    const canary = randomBytes(8).toString('hex');
    await sbx.files.write('/home/user/keep.txt', canary);
    const pid = await counting(sbx);
    kept = { sbx, pid, canary };
    const before = await count(sbx);

    const out = await cove(d, 'up', '--nodes', '2', '--code-interpreter-wait', '0', '--desktop-wait', '0', '--autoscale', '--min-nodes', '1', '--max-nodes', '2',
      '--target-free', '0.3', '--scale-in-free', '0.5', '--cpu-overcommit', '4', '--scale-out-cooldown', '0', '--scale-in-cooldown', String(SCALE_IN_COOLDOWN_S),
      '--autoscale-interval', '1', '--drain-timeout', '600');
    assert.match(out, /autoscaler: 1-2 nodes/);

    // The autoscaler drains the second node; the failure lands while the sandbox moves.
    const drainPath = `/admin/clusters/${clusterId}/nodes/${second.nodeId}/drain`;
    await eventually(async () => {
      const v = await admin(d, 'GET', drainPath);
      return v.status === 200 && (v.body as DrainView).sandboxes.some((x) => x.sandboxId === sbx.sandboxId && x.state === 'moving');
    }, 120_000, 'the scale-in migration to start', 20);
    assert.equal((await status()).leaving, second.nodeId, 'scale in drains first');
    assert.equal(eventOf(await status(), 'terminated'), undefined, 'nothing removed before its drain is done');
    const { pid: nodePid } = JSON.parse(readFileSync(join(d.stateDir, 'run', 'orchestrator-2.pid'), 'utf8')) as { pid: number };
    process.kill(nodePid, 'SIGKILL');

    // The autoscaler starts the dead node again (it is still one of its nodes), the drain finishes the move, and
    // only then is the node removed.
    const st = await eventually(async () => {
      const s = await status();
      return eventOf(s, 'terminated', second.nodeId) || eventOf(s, 'returned', second.nodeId) ? s : undefined;
    }, 600_000, 'the scale in to finish', 500);
    assert.ok(eventOf(st, 'terminated', second.nodeId), `terminated once empty: ${JSON.stringify(st.events)}`);
    const v = (await admin(d, 'GET', drainPath)).body as DrainView;
    assert.equal(v.empty, true, JSON.stringify(v.remaining));
    assert.equal(v.sandboxes.find((x) => x.sandboxId === sbx.sandboxId)?.toNodeId, first.nodeId, JSON.stringify(v));
    assert.deepEqual(st.nodes, [first.nodeId]);
    assert.ok(await runsOn(d, first.rpcPort, sbx.sandboxId), 'it runs on the node that stays');
    await intact(sbx, pid, canary, before);
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running');
  });

  test('a burst of creates adds a node; maxNodes holds', { timeout: 600_000 }, async () => {
    assert.ok(kept, 'runs after the scale in');
    const t0 = Date.now();
    // Two sandboxes at once beside the two running: the one node is full by the autoscaler's measure.
    made.push(...(await Promise.all([Sandbox.create({ timeoutMs: 1_800_000 }), Sandbox.create({ timeoutMs: 1_800_000 })])));
    const st = await eventually(async () => {
      const s = await status();
      return eventOf(s, 'launched', second.nodeId, t0) ? s : undefined;
    }, 480_000, 'a node to be added', 500);
    assert.match(eventOf(st, 'launched', second.nodeId, t0)!.reason, /free capacity \d+% below the target headroom 30%/);
    assert.deepEqual(st.nodes, [first.nodeId, second.nodeId]);
    await allNodesHealthy(d, 60_000);

    // More load at maxNodes: the pressure is reported, no node added.
    made.push(...(await Promise.all([Sandbox.create({ timeoutMs: 1_800_000 }), Sandbox.create({ timeoutMs: 1_800_000 })])));
    const capped = await eventually(async () => {
      const s = await status();
      return s.lastDecision && /already at maxNodes 2/.test(s.lastDecision.reason) ? s : undefined;
    }, 60_000, 'the autoscaler to see pressure at maxNodes', 200);
    assert.equal(capped.events.filter((e) => e.action === 'launched').length, 1);
    assert.equal(capped.nodes.length, 2);
  });

  test('idleness removes a node again, not within the scale-in cooldown; minNodes holds; the sandbox with state is intact', { timeout: 600_000 }, async () => {
    const launched = eventOf(await status(), 'launched', second.nodeId);
    assert.ok(launched, 'runs after the burst');
    // The burst ends: everything but the first two sandboxes goes.
    await Promise.all(made.slice(2).map((s) => s.kill()));
    const before = await count(kept.sbx);
    // Idle again, but the node was added less than the cooldown ago: the autoscaler waits (and says so while it
    // does; the event times below are the proof).
    await eventually(async () => {
      const s = await status();
      return (s.lastDecision && /scale-in cooldown/.test(s.lastDecision.reason)) || s.events.some((e) => e.action === 'draining' && e.at > launched.at);
    }, 120_000, 'the scale-in cooldown to be reported (or to have passed)', 200);
    const st = await eventually(async () => {
      const s = await status();
      return s.events.some((e) => e.action === 'terminated' && e.at > launched.at) ? s : undefined;
    }, 480_000, 'the second scale in to finish', 500);
    const drained = st.events.find((e) => e.action === 'draining' && e.at > launched.at)!;
    assert.ok(drained.at - launched.at >= SCALE_IN_COOLDOWN_S * 1000, `scale in ${drained.at - launched.at} ms after the scale out`);
    assert.equal(st.nodes.length, 1);
    // One node: at minNodes, nothing more is removed however idle it is.
    const atMin = await eventually(async () => {
      const s = await status();
      return s.lastDecision && /at minNodes 1/.test(s.lastDecision.reason) ? s : undefined;
    }, 30_000, 'the autoscaler to hold at minNodes', 200);
    assert.equal(atMin.events.filter((e) => e.action === 'terminated').length, 2);
    await intact(kept.sbx, kept.pid, kept.canary, before);

    // The operator's view of the same, as a process.
    const text = await cove(d, 'autoscale', 'status');
    assert.match(text, /provider local; nodes 1-2: /);
    assert.match(text, /last decision: none \(at minNodes 1\)/);
  });
});
