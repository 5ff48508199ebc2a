// `cove autoscale run --provider aws-asg` as a process: a real control plane (its admin API, drains and demand)
// over the wire-level cluster fixture, and the Auto Scaling API stand-in (test-support) at --asg-endpoint.
// Demand the nodes cannot meet raises the group's desired capacity; an idle node is drained first and then only
// its own instance is terminated; a bad configuration, an unreachable or refusing control plane and the group's
// errors end the start with their structured code before anything is changed.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Code } from '@connectrpc/connect';
import { NodeStatus } from '@cove/contracts/orchestrator';
import { AutoScalingStandIn } from '@cove/test-support/aws-autoscaling-stand-in';
import { eventually } from '@cove/test-support/eventually';
import { request } from 'undici';
import type * as CpFixture from '../../control-plane/test/fixtures/control-plane.js';
import type * as ClusterFixture from '../../control-plane/test/fixtures/fake-cluster.js';
import { repoRoot } from '../src/paths.js';

// The control plane's own test fixtures (a real control plane in this process, the cluster stand-in), from its
// compiled tests: one copy of each.
const fixture = (name: string) => import(pathToFileURL(join(repoRoot, 'packages/control-plane/dist/test/fixtures', name)).href);
const { ADMIN_TOKEN, call, setupTeam, startControlPlane } = (await fixture('control-plane.js')) as typeof CpFixture;
const { startFakeCluster } = (await fixture('fake-cluster.js')) as typeof ClusterFixture;

const GROUP = 'cove-orchestrators';
const A = 'i-0123456789abcdef0';
const GiB = 1n << 30n;
const MAIN = join(repoRoot, 'packages/cli/dist/src/main.js');

describe('cove autoscale run --provider aws-asg', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-autoscale-aws-'));
  const stand = new AutoScalingStandIn(GROUP);
  const tokenFile = join(dir, 'admin-token');
  let cp: CpFixture.RunningControlPlane;
  let cluster: ClusterFixture.FakeCluster;
  let key: string;
  let clusterId: string;
  /** A control plane that only counts what it is asked (for starts that must call nothing). */
  let recorder: Server;
  let recorded = 0;
  let recorderUrl: string;
  const children: ChildProcess[] = [];

  const awsEnv = { AWS_ACCESS_KEY_ID: 'AKIDSTANDIN', AWS_SECRET_ACCESS_KEY: 'stand-in-secret', AWS_EC2_METADATA_DISABLED: 'true', AWS_PROFILE: '', AWS_REGION: '' };
  const env = (extra: Record<string, string> = {}) => {
    const e: Record<string, string> = { ...(process.env as Record<string, string>), ...awsEnv, ...extra };
    for (const k of ['COVE_ADMIN_TOKEN', 'AWS_PROFILE', 'AWS_REGION', 'AWS_SESSION_TOKEN']) if (!extra[k]) delete e[k];
    return e;
  };
  const args = (over: Record<string, string | undefined> = {}) => {
    const flags: Record<string, string | undefined> = {
      '--provider': 'aws-asg',
      '--asg-name': GROUP,
      '--region': 'eu-west-1',
      '--asg-endpoint': stand.url,
      '--control-plane': cp.url,
      '--cluster-id': clusterId,
      '--admin-token-file': tokenFile,
      '--state-file': join(dir, 'state.json'),
      '--listen': '127.0.0.1:0',
      '--min-nodes': '1',
      '--max-nodes': '3',
      '--scale-out-cooldown': '0',
      '--scale-in-cooldown': '0',
      '--autoscale-interval': '0.2',
      '--drain-timeout': '10',
      ...over,
    };
    return ['autoscale', 'run', ...Object.entries(flags).flatMap(([k, v]) => (v === undefined ? [] : [k, v]))];
  };

  /** A start that must fail: its exit code and stderr; the stand-in and the counting control plane saw nothing. */
  async function refused(over: Record<string, string | undefined>, extraEnv: Record<string, string> = {}): Promise<string> {
    stand.calls = [];
    const child = spawn(process.execPath, [MAIN, ...args(over)], { env: env(extraEnv), stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    assert.equal(code, 1, stderr);
    // The error is the last line (the AWS SDK may warn before it about the Node version).
    return stderr.trim().split('\n').at(-1)!;
  }

  const stop = async (child: ChildProcess) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };

  before(async () => {
    await stand.start();
    cluster = await startFakeCluster();
    cluster.addNode(A, { cpuCount: 16, memoryBytes: 64n * GiB });
    cp = await startControlPlane({ COVE_DB_URL: join(dir, 'cp.db') }, dir);
    ({ key, clusterId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 20 }));
    writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
    recorder = createServer((_req, res) => {
      recorded++;
      res.writeHead(500).end();
    });
    await new Promise<void>((r) => recorder.listen(0, '127.0.0.1', r));
    recorderUrl = `http://127.0.0.1:${(recorder.address() as AddressInfo).port}`;
    // An instance the group starts boots and joins the cluster: the fixture gets a node of that id.
    stand.onCall = () => {
      for (const i of stand.group.instances) {
        if (!/^Terminat/.test(i.state) && !cluster.nodes.has(i.id)) cluster.addNode(i.id, { cpuCount: 16, memoryBytes: 64n * GiB });
      }
    };
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await cp.close();
    await cluster.close();
    await stand.stop();
    if (recorder.listening) await new Promise((r) => recorder.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  test('a bad configuration is refused with every problem named, and nothing is called', async () => {
    const cases: Array<[Record<string, string | undefined>, RegExp[], Record<string, string>?]> = [
      [{ '--min-nodes': '3', '--max-nodes': '2' }, [/--min-nodes: must not exceed maxNodes \(3 > 2\)/]],
      [{ '--min-nodes': '0', '--max-nodes': '0' }, [/--min-nodes: must be at least 1: a cluster with zero nodes/, /--max-nodes: must be at least 1/]],
      [{ '--max-nodes': undefined }, [/--max-nodes: required with the aws-asg provider/]],
      [{ '--asg-name': undefined, '--region': undefined }, [/--asg-name: required/, /--region: required/]],
      [{ '--region': 'mars', '--provider': 'local' }, [/--region: "mars" is not an AWS region name/, /--provider: "local" is not a provider this command runs/]],
      [{ '--admin-token-file': undefined }, [/the admin token: set COVE_ADMIN_TOKEN or --admin-token-file/]],
      [{ '--admin-token-file': join(dir, 'missing') }, [/--admin-token-file: cannot read .*ENOENT/]],
      [{ '--control-plane': 'file:///etc/passwd', '--cluster-id': undefined }, [/--control-plane: "file:\/\/\/etc\/passwd" is not an http\(s\) URL/, /--cluster-id: required/]],
      [{ '--target-free': '0.6', '--scale-in-free': '0.5', '--autoscale-interval': '0' }, [/--scale-in-free: must be above targetFreeFraction/, /--autoscale-interval: must be between/]],
    ];
    for (const [over, want, extraEnv] of cases) {
      const stderr = await refused({ '--control-plane': recorderUrl, ...over }, extraEnv);
      assert.match(stderr, /^cove: invalid_autoscaler_config: /, stderr);
      for (const w of want) assert.match(stderr, w);
      assert.equal(stand.calls.length, 0, `${JSON.stringify(over)}: the group was called`);
      assert.equal(recorded, 0, `${JSON.stringify(over)}: the control plane was called`);
    }
    // The token from the environment is as good as the file (and the region from AWS_REGION).
    const fromEnv = await refused({ '--admin-token-file': undefined, '--region': undefined, '--control-plane': recorderUrl }, { COVE_ADMIN_TOKEN: ADMIN_TOKEN, AWS_REGION: 'eu-west-1' });
    assert.match(fromEnv, /^cove: control_plane_error: /, fromEnv);
    assert.equal(recorded, 1, 'one check of the cluster, then stopped');
    assert.equal(stand.calls.length, 0);
  });

  test('an unreachable or refusing control plane and the group’s errors end the start with their codes', async () => {
    // The counting control plane's port, once nothing listens there.
    const closed = recorderUrl;
    await new Promise((r) => recorder.close(r));
    assert.match(await refused({ '--control-plane': closed }), /^cove: control_plane_unreachable: the control plane at http:\/\/127\.0\.0\.1:\d+ did not answer/);
    assert.equal(stand.calls.length, 0, 'the group is not touched while the control plane is away');
    writeFileSync(join(dir, 'wrong-token'), 'not-the-admin-token');
    assert.match(await refused({ '--admin-token-file': join(dir, 'wrong-token') }), /^cove: admin_token_rejected: /);
    assert.match(await refused({ '--cluster-id': 'no-such-cluster' }), /^cove: cluster_not_found: .*no-such-cluster/);
    assert.equal(stand.calls.length, 0);

    assert.match(await refused({ '--asg-name': 'not-the-group' }), /^cove: provider_not_found: scaling group "not-the-group" does not exist/);
    stand.faults = [{ status: 403, code: 'AccessDenied' }];
    assert.match(await refused({}), /^cove: provider_rejected: DescribeAutoScalingGroups .*\(AccessDenied 403\)/);
    assert.deepEqual(stand.calls.map((c) => c.action), ['DescribeAutoScalingGroups'], 'a refusal is not retried, nothing else called');
    assert.deepEqual(
      stand.group.instances.map((i) => i.state),
      stand.group.instances.map(() => 'InService'),
    );
  });

  test('a scale in that cannot be recorded is not started: no drain, no terminate, until the record can be written', async () => {
    // Two idle nodes at --min-nodes 1: the policy scales D in (ties go to the higher id). Its record cannot be
    // written (the atomic write's temporary name is taken by a directory), so the step fails before the drain.
    const D = 'i-0ddddddddddddddd0';
    stand.calls = [];
    stand.faults = [];
    stand.group = { exists: true, desired: 2, max: 3, instances: [{ id: A, state: 'InService' }, { id: D, state: 'InService' }] };
    cluster.addNode(D, { cpuCount: 16, memoryBytes: 64n * GiB });
    cluster.calls.length = 0;
    const stateFile = join(dir, 'unwritable', 'state.json');
    mkdirSync(`${stateFile}.tmp`, { recursive: true });
    const child = spawn(process.execPath, [MAIN, ...args({ '--state-file': stateFile })], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    const lines: Array<Record<string, unknown>> = [];
    createInterface({ input: child.stdout! }).on('line', (l) => lines.push(JSON.parse(l)));
    const url = await eventually(() => lines.find((l) => l.msg === 'autoscaler: serving /health and /status')?.url as string | undefined, 15_000, "the autoscaler's status URL");
    const status = async () => (await (await request(`${url}/status`)).body.json()) as { steps: number; lastErrorCode: string | null; leaving: string | null };
    await eventually(async () => {
      const st = await status();
      return st.lastErrorCode === 'state_not_written' && st.steps >= 3;
    }, 10_000, 'three steps failing with state_not_written');
    assert.equal((await status()).leaving, null, 'not counted as leaving');
    assert.equal(cluster.calls.filter((c) => c.method === 'POST /v1/nodes/drain').length, 0, 'no drain started');
    assert.equal(cluster.nodes.get(D)!.status, NodeStatus.HEALTHY);
    assert.ok(stand.calls.every((c) => c.action === 'DescribeAutoScalingGroups'), 'nothing terminated');

    // The record can be written again: the same scale in goes through, drain first.
    rmSync(`${stateFile}.tmp`, { recursive: true });
    const term = await eventually(() => stand.calls.find((c) => c.action === 'TerminateInstanceInAutoScalingGroup'), 20_000, 'the scale in once recordable');
    assert.equal(term.params.InstanceId, D);
    assert.deepEqual(cluster.calls.filter((c) => c.method === 'POST /v1/nodes/drain').map((c) => c.nodeId), [D]);
    await stop(child);
  });

  test('demand raises the desired capacity; an idle node is drained, then only its instance is terminated', async () => {
    stand.calls = [];
    cluster.calls.length = 0;
    stand.faults = [];
    stand.group = { exists: true, desired: 1, max: 3, instances: [{ id: A, state: 'InService' }] };
    // A sandbox on A: the node that is in use must never be the one removed.
    const created = await call(cp.url, 'POST', '/sandboxes', { key, body: { templateID: 'base', timeout: 600 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const sandboxId = created.body.sandboxID as string;

    const child = spawn(process.execPath, [MAIN, ...args()], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const lines: Array<Record<string, unknown>> = [];
    createInterface({ input: child.stdout! }).on('line', (l) => lines.push(JSON.parse(l)));
    const url = await eventually(() => lines.find((l) => l.msg === 'autoscaler: serving /health and /status')?.url as string | undefined, 15_000, `the autoscaler's status URL (${stderr})`);
    const status = async () => (await (await request(`${url}/status`)).body.json()) as { provider: string; lastDecision: { reason: string } | null; events: Array<{ action: string; nodeId: string }>; lastErrorCode: string | null };
    assert.equal((await request(`${url}/health`)).statusCode, 200);
    await eventually(async () => (await status()).lastDecision?.reason.includes('at minNodes 1'), 10_000, 'a first step at minNodes');
    assert.ok(!stand.calls.some((c) => c.action !== 'DescribeAutoScalingGroups'), 'nothing changed without a reason');

    // Demand the one node cannot meet: a create refused for lack of capacity.
    cluster.nodes.get(A)!.failCreateWith = Code.ResourceExhausted;
    const refusedCreate = await call(cp.url, 'POST', '/sandboxes', { key, body: { templateID: 'base', timeout: 600 } });
    cluster.nodes.get(A)!.failCreateWith = undefined;
    assert.notEqual(refusedCreate.status, 201);

    const set = await eventually(() => stand.calls.find((c) => c.action === 'SetDesiredCapacity'), 15_000, 'SetDesiredCapacity');
    assert.equal(set.params.AutoScalingGroupName, GROUP);
    assert.equal(set.params.DesiredCapacity, '2');
    assert.equal(set.params.HonorCooldown, 'false');
    assert.match(set.authorization ?? '', /^AWS4-HMAC-SHA256 Credential=AKIDSTANDIN\/\d{8}\/eu-west-1\/autoscaling\//);
    const added = stand.group.instances.find((i) => i.id !== A)!.id;

    // The new node is idle (A holds the sandbox): it is drained, and only once its drain reported it empty is its
    // own instance terminated — with the node marked draining at the edge when the call comes.
    let drainingAtTerminate: boolean | undefined;
    const onCall = stand.onCall!;
    stand.onCall = (action) => {
      if (action === 'TerminateInstanceInAutoScalingGroup') drainingAtTerminate = cluster.nodes.get(added)?.status === NodeStatus.DRAINING;
      onCall(action);
    };
    const term = await eventually(() => stand.calls.find((c) => c.action === 'TerminateInstanceInAutoScalingGroup'), 20_000, 'TerminateInstanceInAutoScalingGroup');
    assert.deepEqual({ id: term.params.InstanceId, dec: term.params.ShouldDecrementDesiredCapacity }, { id: added, dec: 'true' });
    assert.equal(drainingAtTerminate, true, 'drained before terminated');
    assert.deepEqual(cluster.calls.filter((c) => c.method === 'POST /v1/nodes/drain').map((c) => c.nodeId), [added], 'only the idle node was drained');
    const drain = await call(cp.url, 'GET', `/admin/clusters/${clusterId}/nodes/${added}/drain`, { admin: ADMIN_TOKEN });
    assert.equal(drain.body.status, 'done');
    assert.equal(drain.body.empty, true);

    const st = await eventually(async () => {
      const s = await status();
      return s.events.some((e) => e.action === 'terminated') ? s : undefined;
    }, 10_000, 'the terminated event');
    assert.equal(st.provider, 'aws-asg');
    assert.deepEqual(st.events.map((e) => [e.action, e.nodeId]), [['launched', added], ['draining', added], ['terminated', added]]);
    // The scale in is over: nothing left on disk to resume; A and its sandbox are as they were.
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')), {});
    assert.equal(stand.calls.filter((c) => c.action === 'TerminateInstanceInAutoScalingGroup').length, 1);
    assert.equal(stand.group.instances.find((i) => i.id === A)!.state, 'InService');
    assert.equal(stand.group.desired, 1);
    assert.ok(cluster.nodes.get(A)!.sandboxes.has(sandboxId), 'the sandbox on A is untouched');
    await stop(child);
  });

  test('a restarted autoscaler finishes the scale in it recorded, and a broken record stops it before any call', async () => {
    // It was killed after recording C as leaving: its successor drains C (the drain it may not have started) and
    // terminates C once empty, not A (and then scales out to its minimum again, as any start below it would).
    const C = 'i-0ccccccccccccccc0';
    stand.group.instances.push({ id: C, state: 'InService' });
    stand.group.desired = 2;
    cluster.addNode(C, { cpuCount: 16, memoryBytes: 64n * GiB });
    stand.calls = [];
    cluster.calls.length = 0;
    writeFileSync(join(dir, 'state.json'), JSON.stringify({ leaving: C }));
    // At 2 nodes of --min-nodes 2 --max-nodes 2 the policy itself never scales in (nor out): only the record does.
    const child = spawn(process.execPath, [MAIN, ...args({ '--min-nodes': '2', '--max-nodes': '2' })], { env: env(), stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    const term = await eventually(() => stand.calls.find((c) => c.action === 'TerminateInstanceInAutoScalingGroup'), 20_000, 'the recorded scale in to finish');
    assert.equal(term.params.InstanceId, C);
    assert.deepEqual(cluster.calls.filter((c) => c.method === 'POST /v1/nodes/drain').map((c) => c.nodeId), [C]);
    await eventually(() => JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')).leaving === undefined, 5_000, 'the record cleared');
    await stop(child);
    assert.equal(stand.calls.filter((c) => c.action === 'TerminateInstanceInAutoScalingGroup').length, 1);
    assert.equal(stand.group.instances.find((i) => i.id === A)!.state, 'InService');

    // A record that is not the autoscaler's: refused with its code, the group and the control plane untouched.
    writeFileSync(join(dir, 'state.json'), JSON.stringify({ leaving: { evil: true } }));
    cluster.calls.length = 0;
    assert.match(await refused({}), /^cove: invalid_autoscaler_state: /);
    assert.equal(stand.calls.length, 0);
    assert.equal(cluster.calls.length, 0);
  });
});
