// The API port with TLS (COVE_EDGE_TLS_*): REST over HTTPS on HTTP/1.1 and h2, heartbeats and the control
// link over h2, all on one port; a client trusting another CA fails fast; with a client CA (mutual TLS) a
// client without a certificate is refused. Certificates are generated per run with openssl.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpsRequest } from 'node:https';
import { connect as h2connect, type SecureClientSessionOptions } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { CreateRequestSchema, SandboxService } from '@cove/contracts/orchestrator';
import { Agent, request } from 'undici';
import { ConfigError, loadConfig } from '../src/index.js';
import { FakeNode } from './fixtures/fake-node.js';
import { CLUSTER_TOKEN, create, linkHeaders, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';

const auth = { authorization: `Bearer ${CLUSTER_TOKEN}` };

/** GET over HTTPS with node:https (HTTP/1.1 only); resolves with the status, HTTP version and body. */
function https1Get(url: string, opts: { ca: string; cert?: string; key?: string; headers?: Record<string, string> }) {
  return new Promise<{ status: number; httpVersion: string; body: any }>((resolve, reject) => {
    const req = httpsRequest(url, { ca: opts.ca, cert: opts.cert, key: opts.key, headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, httpVersion: res.httpVersion, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** GET over h2 with node:http2; resolves with the status, negotiated ALPN protocol and body. */
function h2Get(url: string, path: string, tls: SecureClientSessionOptions, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; alpn: string | undefined; body: any }>((resolve, reject) => {
    const session = h2connect(url, tls);
    session.on('error', reject);
    const stream = session.request({ ':path': path, ...headers });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', reject);
    stream.on('end', () => {
      const alpn = session.alpnProtocol;
      session.close();
      resolve({ status, alpn, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
    });
    stream.end();
  });
}

describe('edge API port over TLS', () => {
  let pki: TestPki;
  let edge: RunningEdge;
  let node: FakeNode;

  before(async () => {
    pki = makeTestPki();
    edge = await startEdge({ COVE_EDGE_TLS_CERT: pki.files.serverCert, COVE_EDGE_TLS_KEY: pki.files.serverKey });
    node = await new FakeNode({ nodeId: 'tls-node' }).start();
  });
  after(async () => {
    await edge?.close();
    await node?.close();
    pki?.remove();
  });

  it('announces an https URL and serves REST over HTTPS HTTP/1.1 (undici and node:https)', async () => {
    assert.match(edge.apiUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
    const agent = new Agent({ connect: { ca: pki.pem.ca } });
    try {
      const health = await request(`${edge.apiUrl}/health`, { dispatcher: agent });
      assert.equal(health.statusCode, 503);
      assert.deepEqual(await health.body.json(), { status: 'unhealthy' });
      const nodes = await request(`${edge.apiUrl}/v1/nodes`, { dispatcher: agent, headers: auth });
      assert.equal(nodes.statusCode, 200);
      assert.deepEqual(await nodes.body.json(), []);
      const denied = await request(`${edge.apiUrl}/v1/nodes`, { dispatcher: agent });
      assert.equal(denied.statusCode, 401);
      await denied.body.text();
    } finally {
      await agent.close();
    }
    const viaHttps = await https1Get(`${edge.apiUrl}/v1/nodes`, { ca: pki.pem.ca, headers: auth });
    assert.deepEqual(viaHttps, { status: 200, httpVersion: '1.1', body: [] });
  });

  it('accepts heartbeats over TLS and serves REST over h2 on the same port', async () => {
    const res = await node.heartbeat(edge.apiUrl, { tls: { ca: pki.pem.ca } });
    assert.equal(res.intervalMs, 2000);
    const nodes = await h2Get(edge.apiUrl, '/v1/nodes', { ca: pki.pem.ca }, auth);
    assert.equal(nodes.status, 200);
    assert.equal(nodes.alpn, 'h2');
    assert.deepEqual(nodes.body.map((n: { nodeId: string }) => n.nodeId), ['tls-node']);
  });

  it('carries the control link over h2 with TLS to the node', async () => {
    const manager = new Http2SessionManager(edge.apiUrl, undefined, { ca: pki.pem.ca });
    try {
      const client = createClient(SandboxService, createGrpcTransport({ baseUrl: edge.apiUrl, sessionManager: manager }));
      const created = await client.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'tls-sbx', templateId: 'base' } }), {
        headers: linkHeaders('tls-node', { 'cove-sandbox-id': 'tls-sbx' }),
      });
      assert.equal(created.sandbox?.sandboxId, 'tls-sbx');
      assert.equal(node.rpcHeaders.at(-1)?.headers.get('authorization'), `Bearer ${node.nodeToken}`);
      const list = await client.list({}, { headers: linkHeaders('tls-node') });
      assert.deepEqual(list.sandboxes.map((s) => s.sandboxId), ['tls-sbx']);
    } finally {
      manager.abort();
    }
  });

  it('fails fast for a client that trusts another CA, and does not speak cleartext', async () => {
    const started = Date.now();
    await assert.rejects(https1Get(`${edge.apiUrl}/health`, { ca: pki.pem.otherCa }), (err: NodeJS.ErrnoException) => {
      assert.match(String(err.code), /SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
      return true;
    });
    await assert.rejects(h2Get(edge.apiUrl, '/health', { ca: pki.pem.otherCa }), /certificate/i);
    assert.ok(Date.now() - started < 5000);
    // A cleartext client gets no HTTP answer (the TLS server does not serve h2c or plain HTTP/1.1).
    await assert.rejects(request(edge.apiUrl.replace('https:', 'http:') + '/health', { headersTimeout: 5000 }));
  });

  it('refuses TLS below 1.2', async () => {
    await assert.rejects(
      new Promise<void>((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port: edge.apiPort, ca: pki.pem.ca, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' }, () => {
          s.end();
          resolve();
        });
        s.on('error', reject);
      }),
    );
  });
});

describe('edge API port with mutual TLS', () => {
  let pki: TestPki;
  let edge: RunningEdge;
  let node: FakeNode;

  before(async () => {
    pki = makeTestPki();
    edge = await startEdge({
      COVE_EDGE_TLS_CERT: pki.files.serverCert,
      COVE_EDGE_TLS_KEY: pki.files.serverKey,
      COVE_EDGE_TLS_CLIENT_CA: pki.files.ca,
    });
    node = await new FakeNode({ nodeId: 'mtls-node' }).start();
  });
  after(async () => {
    await edge?.close();
    await node?.close();
    pki?.remove();
  });

  it('refuses a client without a certificate on HTTP/1.1 and h2', async () => {
    const started = Date.now();
    const refused = (err: Error): boolean => {
      assert.match(err.message, /certificate required/);
      return true;
    };
    await assert.rejects(https1Get(`${edge.apiUrl}/health`, { ca: pki.pem.ca }), refused);
    await assert.rejects(h2Get(edge.apiUrl, '/health', { ca: pki.pem.ca }), refused);
    await assert.rejects(node.heartbeat(edge.apiUrl, { tls: { ca: pki.pem.ca } }), refused);
    assert.ok(Date.now() - started < 5000, 'refusals are immediate');
  });

  it('refuses a client certificate from another CA', async () => {
    // A client certificate from a second, unrelated PKI.
    const other = makeTestPki();
    try {
      await assert.rejects(https1Get(`${edge.apiUrl}/health`, { ca: pki.pem.ca, cert: other.pem.clientCert, key: other.pem.clientKey }), (err: Error & { code?: string }) => {
        // TLS 1.3: the server's "unknown ca" alert arrives after the client thinks the handshake is done.
        assert.match(`${err.code} ${err.message}`, /ECONNRESET|unknown ca|alert/i);
        return true;
      });
    } finally {
      other.remove();
    }
  });

  it('serves a client presenting a certificate signed by the client CA', async () => {
    const cert = { cert: pki.pem.clientCert, key: pki.pem.clientKey };
    const res = await node.heartbeat(edge.apiUrl, { tls: { ca: pki.pem.ca, ...cert } });
    assert.equal(res.intervalMs, 2000);
    const h1 = await https1Get(`${edge.apiUrl}/v1/nodes`, { ca: pki.pem.ca, ...cert, headers: auth });
    assert.equal(h1.status, 200);
    assert.equal(h1.httpVersion, '1.1');
    const h2 = await h2Get(edge.apiUrl, '/v1/nodes', { ca: pki.pem.ca, ...cert }, auth);
    assert.equal(h2.alpn, 'h2');
    assert.deepEqual(h2.body.map((n: { nodeId: string }) => n.nodeId), ['mtls-node']);
  });
});

describe('edge TLS configuration', () => {
  const base = {
    COVE_CLUSTER_TOKEN: 'c'.repeat(20),
    COVE_NODE_CREDENTIAL_KEY: 'n'.repeat(32),
    COVE_SANDBOX_DOMAIN: 'cove.localhost',
    COVE_UPLOAD_SECRET: 'u'.repeat(32),
  };

  it('needs cert and key together, and TLS for a client CA', () => {
    for (const env of [{ COVE_EDGE_TLS_CERT: '/x.pem' }, { COVE_EDGE_TLS_KEY: '/x.key' }, { COVE_EDGE_TLS_CLIENT_CA: '/ca.pem' }]) {
      assert.throws(() => loadConfig({ ...base, ...env }), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /COVE_EDGE_TLS_(CERT|CLIENT_CA)/);
        return true;
      });
    }
    assert.equal(loadConfig(base).tls, undefined);
  });

  it('reports unreadable or mismatched PEM files at start-up', () => {
    assert.throws(() => loadConfig({ ...base, COVE_EDGE_TLS_CERT: '/nonexistent/cert.pem', COVE_EDGE_TLS_KEY: '/nonexistent/key.pem' }), /cannot read \/nonexistent\/cert\.pem/);
    const pki = makeTestPki();
    try {
      assert.throws(() => loadConfig({ ...base, COVE_EDGE_TLS_CERT: pki.files.serverCert, COVE_EDGE_TLS_KEY: pki.files.clientKey }), /not a usable PEM/);
      const ok = loadConfig({ ...base, COVE_EDGE_TLS_CERT: pki.files.serverCert, COVE_EDGE_TLS_KEY: pki.files.serverKey, COVE_EDGE_TLS_CLIENT_CA: pki.files.ca });
      assert.ok(ok.tls?.clientCa);
    } finally {
      pki.remove();
    }
  });
});
