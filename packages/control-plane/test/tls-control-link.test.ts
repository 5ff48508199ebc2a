// The control link over TLS: the real edge (its own process) serves its API port with mutual TLS; the
// control plane, given the customer CA and a client certificate (COVE_CONTROL_LINK_*), discovers the node
// and creates, extends and kills a sandbox through it. Without the CA, or without a client certificate,
// calls fail fast with the TLS reason. Certificates are generated per run with openssl.

import { deriveNodeToken } from '@cove/auth-tokens';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { NodeRegistry } from '@cove/contracts/edge';
import { Agent, request } from 'undici';
import { ControlLink, LinkCallError } from '../src/cluster/control-link.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { ClusterUnavailable } from '../src/errors.js';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { nodeInfo, startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { EDGE_MAIN, spawnEdge, type EdgeProcess } from './fixtures/edge-process.js';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';

const CLUSTER_TOKEN = 'tls-edge-cluster-token-0123456789';
// The edge derives each node's token from this key; the fixture node holds only its own.
const NODE_CREDENTIAL_KEY = 'edge-node-credential-key-0123456789abcdef';
const NODE_TOKEN = deriveNodeToken(NODE_CREDENTIAL_KEY, 'tls-node-1');

function clusterAt(endpoint: string) {
  return { id: 'c1', name: 'tls', endpoint, token: CLUSTER_TOKEN, sandboxDomain: null, publicUrl: null, createdAt: new Date(), updatedAt: new Date() };
}

describe('control link over mutual TLS through the real edge', { skip: existsSync(EDGE_MAIN) ? false : 'edge not built' }, () => {
  let pki: TestPki;
  let edge: EdgeProcess;
  let edgeUrl: string;
  let node: FakeCluster;
  let cp: RunningControlPlane;
  let key: string;

  before(async () => {
    pki = makeTestPki();
    node = await startFakeCluster(NODE_TOKEN);
    const fakeNode = node.addNode('tls-node-1');
    edge = await spawnEdge({
      COVE_CLUSTER_TOKEN: CLUSTER_TOKEN,
      COVE_NODE_CREDENTIAL_KEY: NODE_CREDENTIAL_KEY,
      COVE_EDGE_TLS_CERT: pki.files.serverCert,
      COVE_EDGE_TLS_KEY: pki.files.serverKey,
      COVE_EDGE_TLS_CLIENT_CA: pki.files.ca,
    });
    assert.equal(edge.record.tls, 'mutual');
    edgeUrl = `https://127.0.0.1:${edge.apiPort}`;

    // The node registers over TLS with its own client certificate.
    const sessions = new Http2SessionManager(edgeUrl, undefined, { ca: pki.pem.ca, cert: pki.pem.clientCert, key: pki.pem.clientKey });
    try {
      const registry = createClient(NodeRegistry, createGrpcTransport({ baseUrl: edgeUrl, sessionManager: sessions }));
      await registry.heartbeat(
        { info: nodeInfo(fakeNode), rpcUrl: node.endpoint, proxyUrl: 'http://127.0.0.1:1', sandboxIds: [] },
        { headers: { authorization: `Bearer ${NODE_TOKEN}` } },
      );
    } finally {
      sessions.abort();
    }

    cp = await startControlPlane({
      COVE_CONTROL_LINK_CA: pki.files.ca,
      COVE_CONTROL_LINK_CLIENT_CERT: pki.files.clientCert,
      COVE_CONTROL_LINK_CLIENT_KEY: pki.files.clientKey,
    });
    ({ key } = await setupTeam(cp.url, edgeUrl, CLUSTER_TOKEN));
  });

  after(async () => {
    await cp?.close();
    await edge?.stop();
    await node?.close();
    pki?.remove();
  });

  test('create, timeout and kill travel through the TLS edge to the node', async () => {
    // Placement first discovers the nodes (edge REST GET /v1/nodes), then Create goes over gRPC: one TLS session.
    const r = await call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', timeout: 120 } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = r.body.sandboxID as string;
    const n = node.nodes.get('tls-node-1')!;
    assert.ok(n.sandboxes.has(id));
    const created = node.calls.find((c) => c.method === 'Create' && c.sandboxId === id);
    assert.equal(created?.authorization, `Bearer ${NODE_TOKEN}`);

    // The edge's REST API over HTTPS/1.1 with the client certificate (undici).
    const agent = new Agent({ connect: { ca: pki.pem.ca, cert: pki.pem.clientCert, key: pki.pem.clientKey } });
    try {
      const route = await request(new URL(`/v1/sandboxes/${id}`, edgeUrl), { dispatcher: agent, headers: { authorization: `Bearer ${CLUSTER_TOKEN}` } });
      assert.equal(route.statusCode, 200);
      assert.deepEqual(await route.body.json(), { sandboxId: id, nodeId: 'tls-node-1' });
    } finally {
      await agent.close();
    }

    assert.equal((await call(cp.url, 'POST', `/sandboxes/${id}/timeout`, { key, body: { timeout: 30 } })).status, 204);
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${id}`, { key })).status, 204);
    assert.ok(!n.sandboxes.has(id));
  });

  test('the control link lists nodes and calls them with the configured TLS material', async () => {
    const link = new ControlLink(clusterAt(edgeUrl), 5000, cp.config.controlLinkTls);
    try {
      const nodes = await link.listNodes();
      assert.deepEqual(nodes.map((n) => n.nodeId), ['tls-node-1']);
      assert.deepEqual(await link.list('tls-node-1'), []);
    } finally {
      link.close();
    }
  });

  test('an edge certificate from an unknown CA fails fast with the reason', async () => {
    const started = Date.now();
    // System roots only: the customer CA is unknown.
    const link = new ControlLink(clusterAt(edgeUrl), 30_000);
    try {
      await assert.rejects(link.listNodes(), (err: unknown) => {
        assert.ok(err instanceof ClusterUnavailable);
        assert.match(String((err.cause as Error).message), /self[- ]signed certificate|unable to (verify|get)/i);
        return true;
      });
      await assert.rejects(link.list('tls-node-1'), (err: unknown) => {
        assert.ok(err instanceof LinkCallError);
        assert.match(err.message, /self[- ]signed certificate|unable to (verify|get)/i);
        return true;
      });
    } finally {
      link.close();
    }
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  });

  test('without a client certificate the edge refuses the control link', async () => {
    const link = new ControlLink(clusterAt(edgeUrl), 30_000, { ca: cp.config.controlLinkTls.ca, cert: undefined, key: undefined });
    try {
      await assert.rejects(link.list('tls-node-1'), (err: unknown) => {
        assert.ok(err instanceof LinkCallError);
        assert.match(err.message, /certificate required/);
        return true;
      });
      await assert.rejects(link.listNodes(), ClusterUnavailable);
    } finally {
      link.close();
    }
  });
});

describe('control link TLS configuration', () => {
  const base = { COVE_ADMIN_TOKEN: 'a'.repeat(20) };

  test('client certificate and key go together; unreadable files fail start-up', () => {
    assert.throws(() => loadConfig({ ...base, COVE_CONTROL_LINK_CLIENT_CERT: '/x.pem' }), /COVE_CONTROL_LINK_CLIENT_CERT and COVE_CONTROL_LINK_CLIENT_KEY/);
    assert.throws(() => loadConfig({ ...base, COVE_CONTROL_LINK_CA: '/nonexistent/ca.pem' }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /COVE_CONTROL_LINK_CA: cannot read \/nonexistent\/ca\.pem/);
      return true;
    });
    assert.deepEqual({ ...loadConfig(base).controlLinkTls }, { ca: undefined, cert: undefined, key: undefined });
  });
});
