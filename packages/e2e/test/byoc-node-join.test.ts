// Issue 15 (machine image): the bootstrap a cloud node runs on first boot (deploy/image/bootstrap/cove-node-join.mjs)
// joins an EXTRA orchestrator node to the running deployment with its own fresh credential, the SDK's sandboxes
// run on it, `leave` refuses to take it out under a running sandbox and then removes it cleanly. The doors it
// keeps shut: a credential file others can read or that is a link, and a config that tries to hand the node a
// token or key instead of the credential file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Sandbox } from 'e2b';
import { create } from '@bufbuild/protobuf';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { NodeStatus, SandboxService, InfoService, SetStatusRequestSchema } from '@cove/contracts/orchestrator';
import { deriveNodeToken } from '@cove/auth-tokens';
import { deployment, eventually, repoRoot } from './deployment.js';
import { allNodesHealthy, setDraining } from './nodes.js';

const SCRIPT = join(repoRoot, 'deploy', 'image', 'bootstrap', 'cove-node-join.mjs');
/** The script's exit codes (its EXIT table). */
const EXIT = { config: 3, credential: 4, busy: 6 };
/** A restart or a leave well under the orchestrator's 20 s shutdown bound (main.ts), which it once always hit. */
const STOP_BOUND_MS = 12_000;

interface Secrets {
  nodeCredentialKey: string;
  clusterToken: string;
  artifactKey: string;
  registryPassword: string;
  collectorToken: string;
}

function run(cmd: 'join' | 'leave', config: string, ...extra: string[]): { code: number; out: string } {
  const r = spawnSync(process.execPath, [SCRIPT, cmd, '--config', config, ...extra], { encoding: 'utf8', timeout: 20 * 60_000 });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

async function edgeNode(edgeApi: number, clusterToken: string, nodeId: string): Promise<{ nodeId: string; status: string } | undefined> {
  const res = await fetch(`http://127.0.0.1:${edgeApi}/v1/nodes`, { headers: { authorization: `Bearer ${clusterToken}` } });
  const nodes = (await res.json()) as Array<{ nodeId: string; status: string }>;
  return nodes.find((n) => n.nodeId === nodeId);
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

describe('bootstrap: an extra node joins the running cluster with its own credential and leaves cleanly', () => {
  const d = deployment();
  const secrets = JSON.parse(readFileSync(join(d.stateDir, 'secrets.json'), 'utf8')) as Secrets;
  const topo = JSON.parse(readFileSync(join(d.stateDir, 'topology.json'), 'utf8')) as { templateCacheDir: string; ports: { registry: number; collector: number } };
  const first = d.nodes[0]!;
  // The third node of deployment 1 by the cli's naming (topologyOf): ports 40 above the first node's, its own
  // runtime names and subnet, so it never touches the other nodes' host objects.
  const node = {
    nodeId: `${first.nodeId}-joined`,
    rpcPort: first.rpcPort + 40,
    proxyPort: first.proxyPort + 40,
    dataDir: `${first.dataDir}-joined`,
    instance: 'cove100n2',
    bridge: 'cove100n20',
    vethPrefix: 'c12-',
    subnet: '10.243.0.0/16',
  };
  const token = deriveNodeToken(secrets.nodeCredentialKey, node.nodeId);
  const dir = mkdtempSync(join(tmpdir(), 'cove-join-'));
  const stateDir = join(dir, 'state');
  const tokenFile = join(dir, 'node-token');
  const secretsFile = join(dir, 'cluster-secrets.json');
  const config = join(dir, 'node.env');
  const made: Sandbox[] = [];

  function writeConfig(extra: Record<string, string> = {}, base: Record<string, string> = {}): string {
    const cfg: Record<string, string> = {
      COVE_HOME: repoRoot,
      COVE_JOIN_STATE_DIR: stateDir,
      COVE_JOIN_SUPERVISOR: 'detached',
      COVE_JOIN_TIMEOUT_S: '600',
      COVE_NODE_ID: node.nodeId,
      COVE_NODE_TOKEN_FILE: tokenFile,
      COVE_CLUSTER_SECRETS_FILE: secretsFile,
      COVE_EDGE_URL: `http://127.0.0.1:${d.ports.edgeApi}`,
      COVE_ORCH_HOST: '127.0.0.1',
      COVE_ORCH_RPC_PORT: String(node.rpcPort),
      COVE_ORCH_PROXY_PORT: String(node.proxyPort),
      COVE_DATA_DIR: node.dataDir,
      COVE_TEMPLATE_CACHE_DIR: topo.templateCacheDir,
      COVE_RUNTIME_INSTANCE: node.instance,
      COVE_SANDBOX_BRIDGE: node.bridge,
      COVE_VETH_PREFIX: node.vethPrefix,
      COVE_SANDBOX_SUBNET: node.subnet,
      COVE_STORAGE_URL: pathToFileURL(d.storageDir).href,
      COVE_REGISTRY_URL: `http://127.0.0.1:${topo.ports.registry}`,
      COVE_REGISTRY_USERNAME: 'cove',
      COVE_COLLECTOR_URL: `http://127.0.0.1:${topo.ports.collector}`,
      // One warm base slot: the machine's two cores are shared with the deployment's own two nodes.
      COVE_WARM_POOL: 'base=1',
      ...base,
      ...extra,
    };
    const file = join(dir, `node-${Object.keys(extra).join('-') || 'plain'}.env`);
    writeFileSync(file, Object.entries(cfg).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
    return file;
  }

  before(() => {
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const { artifactKey, registryPassword, collectorToken } = secrets;
    writeFileSync(secretsFile, JSON.stringify({ artifactKey, registryPassword, collectorToken }), { mode: 0o600 });
    writeFileSync(config, readFileSync(writeConfig()));
  });

  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
    // Whatever a failed step left: the node stopped and its host objects removed (idempotent).
    run('leave', config, '--force');
    rmSync(dir, { recursive: true, force: true });
    rmSync(node.dataDir, { recursive: true, force: true });
  });

  test('a credential file others can read, or a link, is refused before anything starts', async () => {
    chmodSync(tokenFile, 0o644);
    try {
      const r = run('join', config);
      assert.equal(r.code, EXIT.credential, r.out);
      assert.match(r.out, /mode 0600/);
    } finally {
      chmodSync(tokenFile, 0o600);
    }
    const link = join(dir, 'token-link');
    symlinkSync(tokenFile, link);
    const r = run('join', writeConfig({ COVE_NODE_TOKEN_FILE: link }));
    assert.equal(r.code, EXIT.credential, r.out);
    assert.match(r.out, /not a regular file/);
    assert.equal(await listening(node.rpcPort), false, 'no orchestrator was started');
  });

  test("a config cannot hand the node a token (another node's) instead of its credential file", async () => {
    const other = deriveNodeToken(secrets.nodeCredentialKey, first.nodeId);
    const r = run('join', writeConfig({ COVE_NODE_TOKEN: other }, { COVE_NODE_TOKEN_FILE: '' }));
    assert.equal(r.code, EXIT.config, r.out);
    assert.match(r.out, /COVE_NODE_TOKEN_FILE/);
    assert.equal(await listening(node.rpcPort), false, 'no orchestrator was started');
  });

  test('join: the node registers with the edge under its own id and the SDK runs a sandbox on it', async (t) => {
    const r = run('join', config);
    assert.equal(r.code, 0, r.out);
    await eventually(async () => (await edgeNode(d.ports.edgeApi, secrets.clusterToken, node.nodeId))?.status === 'healthy', 60_000, 'the joined node healthy at the edge');
    // The env file the node runs with holds its credential: root only.
    assert.equal(spawnSync('stat', ['-c', '%a', join(stateDir, 'orchestrator.env')], { encoding: 'utf8' }).stdout.trim(), '600');
    // cloud-init or an operator running join again changes nothing that runs.
    const pid = readFileSync(join(stateDir, 'orchestrator.pid'), 'utf8');
    const again = run('join', config);
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /already running/);
    assert.equal(readFileSync(join(stateDir, 'orchestrator.pid'), 'utf8'), pid, 'the same orchestrator process');

    // Placement on the new node: the deployment's own nodes drained while the sandbox is created.
    for (const n of d.nodes) await setDraining(d, n.rpcPort, true);
    let sbx: Sandbox;
    try {
      sbx = await Sandbox.create({ timeoutMs: 300_000 });
      made.push(sbx);
    } finally {
      for (const n of d.nodes) await setDraining(d, n.rpcPort, false);
      await allNodesHealthy(d);
    }
    const auth = { authorization: `Bearer ${token}` };
    const rpc = createGrpcTransport({ baseUrl: `http://127.0.0.1:${node.rpcPort}` });
    const listed = await createClient(SandboxService, rpc).list({}, { headers: auth });
    assert.ok(listed.sandboxes.some((s) => s.sandboxId === sbx.sandboxId), 'the sandbox runs on the joined node');
    assert.equal((await sbx.commands.run('echo joined')).stdout.trim(), 'joined');

    await t.test('joining again with new settings restarts the node, and its sandbox keeps running', async () => {
      const before = readFileSync(join(stateDir, 'orchestrator.pid'), 'utf8');
      const changed = writeConfig({ COVE_LOG_LEVEL: 'debug' });
      const t0 = Date.now();
      const r = run('join', changed);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /restarting/);
      // The old process stops at once: an open client connection once held it to the orchestrator's 20 s exit.
      assert.ok(Date.now() - t0 < STOP_BOUND_MS, `the restart took ${Date.now() - t0} ms`);
      assert.notEqual(readFileSync(join(stateDir, 'orchestrator.pid'), 'utf8'), before, 'a new orchestrator process');
      assert.equal((await sbx.commands.run('echo survived')).stdout.trim(), 'survived');
      const relisted = await createClient(SandboxService, rpc).list({}, { headers: auth });
      assert.ok(relisted.sandboxes.some((s) => s.sandboxId === sbx.sandboxId), 'the restarted node re-adopted the sandbox');
      await eventually(async () => (await edgeNode(d.ports.edgeApi, secrets.clusterToken, node.nodeId))?.status === 'healthy', 60_000, 'the node healthy again');
    });

    await t.test('leave refuses while a sandbox runs there, and the sandbox keeps running', async () => {
      const busy = run('leave', config);
      assert.equal(busy.code, EXIT.busy, busy.out);
      assert.equal((await sbx.commands.run('echo still here')).stdout.trim(), 'still here');
      // `leave` drained it: new sandboxes go elsewhere until it is un-drained (or leaves).
      await eventually(async () => (await edgeNode(d.ports.edgeApi, secrets.clusterToken, node.nodeId))?.status === 'draining', 20_000, 'the node draining');
      await createClient(InfoService, rpc).setStatus(create(SetStatusRequestSchema, { status: NodeStatus.HEALTHY }), { headers: auth });
    });

    await t.test('leave, once the sandbox ended: the node stops and its host objects are gone', async () => {
      await sbx.kill();
      const t0 = Date.now();
      const r = run('leave', config);
      assert.equal(r.code, 0, r.out);
      assert.ok(Date.now() - t0 < STOP_BOUND_MS, `leave took ${Date.now() - t0} ms`);
      assert.equal(await listening(node.rpcPort), false, 'the node no longer listens');
      assert.notEqual(spawnSync('ip', ['link', 'show', node.bridge]).status, 0, `bridge ${node.bridge} removed`);
      assert.notEqual(spawnSync('nft', ['list', 'table', 'inet', node.instance]).status, 0, `nft table ${node.instance} removed`);
      // The edge stops counting it (placement skips it) within a few missed beats.
      await eventually(async () => (await edgeNode(d.ports.edgeApi, secrets.clusterToken, node.nodeId))?.status !== 'healthy', 30_000, 'the node no longer healthy at the edge');
      // The deployment's own nodes serve on.
      const after = await Sandbox.create({ timeoutMs: 60_000 });
      made.push(after);
      assert.equal((await after.commands.run('echo ok')).stdout.trim(), 'ok');
    });
  });
});
