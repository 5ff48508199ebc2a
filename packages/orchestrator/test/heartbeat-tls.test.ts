// Heartbeats to an `https://` edge (its own process, mutual TLS on its API port): the node trusts the
// edge through COVE_EDGE_CA and presents COVE_EDGE_CLIENT_CERT/KEY; without them the beat fails with the
// TLS reason. Certificates are generated per run with openssl; no sandbox runtime is needed.
import { deriveNodeToken } from '@cove/auth-tokens';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { InfoResponseSchema } from '@cove/contracts/orchestrator';
import { Agent, request } from 'undici';
import { loadConfig } from '../src/config.js';
import { Heartbeat } from '../src/heartbeat/heartbeat.js';
import { createLogger } from '../src/logger.js';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';

const EDGE_MAIN = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..', 'edge', 'dist', 'src', 'main.js');
const CLUSTER_TOKEN = 'heartbeat-tls-cluster-token-01234';
const NODE_CREDENTIAL_KEY = 'heartbeat-tls-node-credential-key-0123456789';
// The node's own token, as the edge derives it for node id hb-tls-node.
const NODE_TOKEN = deriveNodeToken(NODE_CREDENTIAL_KEY, 'hb-tls-node');
const ARTIFACT_KEY = 'heartbeat-tls-artifact-key-0123456789abcdef';

describe('heartbeat to an https edge', () => {
  let pki: TestPki;
  let edge: ChildProcess;
  /** The edge's cluster storage (it keeps COPY uploads there), removed afterwards. */
  const storage = mkdtempSync(join(tmpdir(), 'cove-edge-storage-'));
  let apiUrl: string;

  before(async () => {
    pki = makeTestPki();
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
        COVE_EDGE_TLS_CERT: pki.files.serverCert,
        COVE_EDGE_TLS_KEY: pki.files.serverKey,
        COVE_EDGE_TLS_CLIENT_CA: pki.files.ca,
        COVE_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: edge.stdout! });
    for await (const line of lines) {
      const rec = JSON.parse(line) as { msg?: string; apiPort?: number };
      if (rec.msg === 'edge listening') {
        apiUrl = `https://127.0.0.1:${rec.apiPort}`;
        break;
      }
    }
    edge.stdout!.resume();
    assert.ok(apiUrl, 'edge did not start');
  });

  after(async () => {
    if (edge && edge.exitCode === null) {
      edge.kill('SIGTERM');
      await once(edge, 'exit');
    }
    rmSync(storage, { recursive: true, force: true });
    pki?.remove();
  });

  const heartbeatFor = (env: Record<string, string>): Heartbeat => {
    const config = loadConfig({ COVE_NODE_TOKEN: NODE_TOKEN, COVE_ARTIFACT_KEY: ARTIFACT_KEY, COVE_NODE_ID: 'hb-tls-node', COVE_EDGE_URL: apiUrl, ...env });
    return new Heartbeat({
      edgeUrl: config.edgeUrl!,
      tls: config.edgeTls,
      nodeToken: config.nodeToken,
      rpcUrl: 'http://127.0.0.1:1',
      proxyUrl: 'http://127.0.0.1:2',
      intervalMs: 2000,
      info: async () => create(InfoResponseSchema, { nodeId: config.nodeId }),
      sandboxes: () => [],
      log: createLogger('silent'),
    });
  };

  it('fails fast without the edge CA or without a client certificate', async () => {
    await assert.rejects(heartbeatFor({}).beat(), /self[- ]signed certificate|unable to (verify|get)/i);
    await assert.rejects(heartbeatFor({ COVE_EDGE_CA: pki.files.ca }).beat(), /certificate required/);
  });

  it('registers the node with the CA and a client certificate', async () => {
    await heartbeatFor({ COVE_EDGE_CA: pki.files.ca, COVE_EDGE_CLIENT_CERT: pki.files.clientCert, COVE_EDGE_CLIENT_KEY: pki.files.clientKey }).beat();
    const agent = new Agent({ connect: { ca: pki.pem.ca, cert: pki.pem.clientCert, key: pki.pem.clientKey } });
    try {
      const res = await request(`${apiUrl}/v1/nodes`, { dispatcher: agent, headers: { authorization: `Bearer ${CLUSTER_TOKEN}` } });
      assert.equal(res.statusCode, 200);
      const nodes = (await res.body.json()) as { nodeId: string }[];
      assert.deepEqual(nodes.map((n) => n.nodeId), ['hb-tls-node']);
    } finally {
      await agent.close();
    }
  });

  it('config: client certificate and key go together, files must be readable', () => {
    assert.throws(() => loadConfig({ COVE_NODE_TOKEN: NODE_TOKEN, COVE_ARTIFACT_KEY: ARTIFACT_KEY, COVE_EDGE_CLIENT_KEY: '/k.pem' }), /COVE_EDGE_CLIENT_CERT and COVE_EDGE_CLIENT_KEY/);
    assert.throws(() => loadConfig({ COVE_NODE_TOKEN: NODE_TOKEN, COVE_ARTIFACT_KEY: ARTIFACT_KEY, COVE_EDGE_CA: '/nonexistent/ca.pem' }), /COVE_EDGE_CA: cannot read/);
  });
});
