// Heartbeats to a real edge (its own process): the node registers itself with its URLs and Info, and the
// edge can drive the node back over RPC with the node token (drain / undrain).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { NodeStatus } from '@cove/contracts/orchestrator';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { SandboxService } from '@cove/contracts/orchestrator';
import { deriveNodeToken } from '@cove/auth-tokens';
import { PACKAGE_DIR, bearer, instance, rpcClients, spec, startOrchestrator, teardown, waitFor, type Running } from './orchestrator-fixture.js';

const I = instance('covthb', 'cth-', '10.239.0.0/16');
const CLUSTER_TOKEN = 'heartbeat-test-cluster-token-0123';
// The edge derives each node's token from this key; the node holds only its own (as `cove up` hands it out).
const NODE_CREDENTIAL_KEY = 'heartbeat-test-node-credential-key-0123456789';
const NODE_TOKEN = deriveNodeToken(NODE_CREDENTIAL_KEY, `node-${I.instance}`);
const EDGE_MAIN = join(PACKAGE_DIR, '..', 'edge', 'dist', 'src', 'main.js');

interface NodeView {
  nodeId: string;
  status: string;
  rpcUrl: string;
  proxyUrl: string;
  info: { nodeId?: string; roles?: string[]; status?: string };
}

describe('heartbeat to the edge', () => {
  let edge: ChildProcess;
  /** The edge's cluster storage (it keeps COPY uploads there), removed afterwards. */
  const storage = mkdtempSync(join(tmpdir(), 'cove-edge-storage-'));
  let edgeExited: Promise<unknown>;
  let apiUrl: string;
  let trafficUrl: string;
  let node: Running;

  before(async () => {
    await teardown(I);
    edge = spawn(process.execPath, [EDGE_MAIN], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        COVE_EDGE_API_PORT: '0',
        COVE_EDGE_TRAFFIC_PORT: '0',
        COVE_EDGE_HOST: '127.0.0.1',
        COVE_CLUSTER_TOKEN: CLUSTER_TOKEN,
        COVE_NODE_CREDENTIAL_KEY: NODE_CREDENTIAL_KEY,
        COVE_SANDBOX_DOMAIN: 'sandbox.cove.test',
        // The edge keeps COPY uploads in cluster storage and signs their URLs; a throwaway store for the test.
        COVE_STORAGE_URL: `file://${storage}`,
        COVE_UPLOAD_SECRET: 'test-upload-secret-0123456789abcdef0123',
        COVE_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    edgeExited = once(edge, 'exit');
    const lines = createInterface({ input: edge.stdout! });
    const { apiPort, trafficPort } = await new Promise<{ apiPort: number; trafficPort: number }>((resolve, reject) => {
      lines.on('line', (line) => {
        try {
          const rec = JSON.parse(line) as { msg?: string; apiPort?: number; trafficPort?: number };
          if (rec.msg === 'edge listening') resolve({ apiPort: rec.apiPort!, trafficPort: rec.trafficPort! });
        } catch {
          /* not a log line */
        }
      });
      void edgeExited.then(() => reject(new Error('edge exited before listening')));
    });
    apiUrl = `http://127.0.0.1:${apiPort}`;
    trafficUrl = `http://127.0.0.1:${trafficPort}`;
    node = await startOrchestrator(I, { COVE_EDGE_URL: apiUrl, COVE_WARM_POOL: '', COVE_HEARTBEAT_INTERVAL_MS: '200', COVE_NODE_TOKEN: NODE_TOKEN });
  });

  after(async () => {
    await node?.close();
    if (edge && edge.exitCode === null) {
      // SIGTERM, not SIGKILL: the edge stops its HAProxy and removes its run dir on the way out (a killed edge left both).
      edge.kill('SIGTERM');
      await edgeExited;
    }
    rmSync(storage, { recursive: true, force: true });
    await teardown(I);
  });

  async function nodes(): Promise<NodeView[]> {
    const res = await fetch(`${apiUrl}/v1/nodes`, { headers: { authorization: `Bearer ${CLUSTER_TOKEN}` } });
    assert.equal(res.status, 200);
    return (await res.json()) as NodeView[];
  }

  it('registers the node with its RPC and proxy URLs and Info', async () => {
    let mine: NodeView | undefined;
    assert.ok(
      await waitFor(async () => {
        mine = (await nodes()).find((n) => n.nodeId === node.config.nodeId);
        return mine !== undefined;
      }, 20_000, 100),
      'node never showed up at the edge',
    );
    assert.equal(mine!.rpcUrl, node.rpcUrl);
    assert.equal(mine!.proxyUrl, node.proxyUrl);
    assert.deepEqual(mine!.info.roles, ['orchestrator']);
  });

  it('the edge drains and undrains the node over its RPC', async () => {
    const drain = await fetch(`${apiUrl}/v1/nodes/${node.config.nodeId}/drain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${CLUSTER_TOKEN}` },
    });
    assert.equal(drain.status, 200);
    const rpc = rpcClients(node.rpcUrl, NODE_TOKEN);
    assert.equal((await rpc.info.info({})).status, NodeStatus.DRAINING);
    const undrain = await fetch(`${apiUrl}/v1/nodes/${node.config.nodeId}/undrain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${CLUSTER_TOKEN}` },
    });
    assert.equal(undrain.status, 200);
    assert.equal((await rpc.info.info({})).status, NodeStatus.HEALTHY);
  });

  it('reports its sandboxes and their traffic-token hashes, so the edge routes and guards them', async () => {
    const rpc = rpcClients(node.rpcUrl, NODE_TOKEN);
    // The control plane's traffic token rides as request metadata, as the edge's control link forwards it.
    const withTraffic = createClient(
      SandboxService,
      createGrpcTransport({
        baseUrl: node.rpcUrl,
        interceptors: [
          bearer(NODE_TOKEN),
          (next) => (req) => {
            req.header.set('cove-traffic-access-token', 'traffic-secret-1');
            return next(req);
          },
        ],
      }),
    );
    await withTraffic.create({ sandbox: spec({ sandboxId: 'priv1' }) });
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'pub1' }) });
    const edgeGet = async (sandboxId: string, token?: string): Promise<{ status: number; body: { message?: string } }> => {
      const res = await fetch(`${trafficUrl}/`, {
        headers: { 'e2b-sandbox-id': sandboxId, 'e2b-sandbox-port': '8080', ...(token ? { 'e2b-traffic-access-token': token } : {}) },
      });
      return { status: res.status, body: (await res.json()) as { message?: string } };
    };
    assert.ok(await waitFor(async () => (await edgeGet('priv1')).status === 403, 20_000, 100), 'edge never learnt priv1 is private');
    const authorised = await edgeGet('priv1', 'traffic-secret-1');
    assert.equal(authorised.status, 502);
    assert.equal(authorised.body.message, 'The sandbox is running but port is not open', 'priv1 with its token');
    // pub1 may reach the edge one heartbeat later than priv1.
    let pub = await edgeGet('pub1');
    assert.ok(
      await waitFor(async () => (pub = await edgeGet('pub1')).body.message !== 'The sandbox was not found', 20_000, 100),
      'edge never learnt pub1',
    );
    assert.equal(pub.status, 502);
    assert.equal(pub.body.message, 'The sandbox is running but port is not open', 'pub1 without a token');
    await rpc.sandboxes.delete({ sandboxId: 'priv1' });
    await rpc.sandboxes.delete({ sandboxId: 'pub1' });
  });
});
