// The sandbox traffic port over TLS (what the SDK's `https://<port>-<id>.<domain>` URLs reach): the same routing
// and JSON errors as the cleartext port, X-Forwarded-Proto https, a re-issued certificate picked up without a
// restart, and a half-given configuration refused at start.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { copyFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { CreateRequestSchema } from '@cove/contracts/orchestrator';
import { eventually } from '@cove/test-support/eventually';
import { makeTestPki, type TestPki } from '@cove/test-support/tls-certs';
import { Agent, request, WebSocket } from 'undici';
import { ConfigError, loadConfig } from '../src/config.js';
import { FakeNode } from './fixtures/fake-node.js';
import { create, linkHeaders, startEdge, type RunningEdge } from './fixtures/edge-harness.js';

/** The certificate a fresh handshake with the TLS traffic port presents (its SHA-256 fingerprint). */
function servedFingerprint(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca }, () => {
      const fp = s.getPeerX509Certificate()!.fingerprint256;
      s.destroy();
      resolve(fp);
    });
    s.once('error', reject);
  });
}

describe('edge TLS traffic port', () => {
  let pki: TestPki;
  let next: TestPki;
  let edge: RunningEdge;
  let node: FakeNode;
  let agent: Agent;
  let base: string;

  before(async () => {
    pki = makeTestPki();
    next = makeTestPki();
    // The edge reads copies: the test later replaces them the way `cove up` re-issues (key, then certificate).
    const cert = join(pki.dir, 'served.pem');
    const key = join(pki.dir, 'served.key');
    copyFileSync(pki.files.serverCert, cert);
    copyFileSync(pki.files.serverKey, key);
    edge = await startEdge({ COVE_EDGE_TRAFFIC_TLS_PORT: '0', COVE_EDGE_TRAFFIC_TLS_CERT: cert, COVE_EDGE_TRAFFIC_TLS_KEY: key }, { trafficCertPollMs: 50 });
    node = await new FakeNode({ nodeId: 'node-tls' }).start();
    await node.heartbeat(edge.apiUrl);
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'pub1' } }), {
      headers: linkHeaders('node-tls', { 'cove-sandbox-id': 'pub1' }),
    });
    // The test certificate names localhost; these requests carry sandbox Hosts, so identity is checked on its own below.
    agent = new Agent({ connect: { ca: [pki.pem.ca, next.pem.ca], checkServerIdentity: () => undefined } });
    base = `https://127.0.0.1:${edge.trafficTlsPort}`;
  });
  after(async () => {
    await agent.close();
    await edge.close();
    await node.close();
    pki.remove();
    next.remove();
  });

  it('routes by Host <port>-<id>.<domain> and tells the sandbox the request came over https', async () => {
    const r = await request(`${base}/`, { dispatcher: agent, headers: { host: '8080-pub1.cove.test:3443' } });
    assert.equal(r.statusCode, 200);
    assert.equal(await r.body.text(), 'hello from pub1:8080');
    const h = await request(`${base}/headers`, { dispatcher: agent, headers: { host: '8080-pub1.cove.test' } });
    assert.equal(((await h.body.json()) as Record<string, string>)['x-forwarded-proto'], 'https');
  });

  it('proxies a WebSocket upgrade over TLS', async () => {
    // WebSocket clients may not set Host (a forbidden header): this one is header-routed, as a browser's behind `sandbox.<domain>` is.
    const ws = new WebSocket(`wss://127.0.0.1:${edge.trafficTlsPort}/ws`, { headers: { 'e2b-sandbox-id': 'pub1', 'e2b-sandbox-port': '8080' }, dispatcher: agent } as never);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('error', (e) => reject(new Error(`WebSocket failed: ${String((e as { message?: string }).message)}`)), { once: true });
    });
    const got = new Promise<string>((resolve) => ws.addEventListener('message', (e) => resolve(String(e.data)), { once: true }));
    ws.send('ping through TLS');
    assert.equal(await got, 'ping through TLS');
    const closed = once(ws as never, 'close');
    ws.close(1000);
    await closed;
  });

  it('answers Hosts that name no sandbox with a 400 JSON error', async () => {
    for (const host of ['evil.example', 'cove.test', 'x.cove.test', '0-pub1.cove.test', '8080-PUB!.cove.test', '8080-pub1.a.cove.test', `${'9'.repeat(270)}.cove.test`]) {
      const r = await request(`${base}/`, { dispatcher: agent, headers: { host } });
      assert.equal(r.statusCode, 400, host);
      assert.match(String(r.headers['content-type']), /application\/json/, host);
      const body = (await r.body.json()) as { code: number; message: string };
      assert.equal(body.code, 400, host);
      assert.match(body.message, /Host/, host);
    }
  });

  it('serves a re-issued certificate on new handshakes without a restart', async () => {
    const cert = join(pki.dir, 'served.pem');
    const key = join(pki.dir, 'served.key');
    const first = await servedFingerprint(edge.trafficTlsPort!, pki.pem.ca);
    copyFileSync(next.files.serverKey, `${key}.new`);
    renameSync(`${key}.new`, key);
    copyFileSync(next.files.serverCert, `${cert}.new`);
    renameSync(`${cert}.new`, cert);
    const now = await eventually(async () => {
      const fp = await servedFingerprint(edge.trafficTlsPort!, next.pem.ca).catch(() => undefined);
      return fp !== undefined && fp !== first ? fp : undefined;
    }, 10_000, 'the re-issued certificate served');
    assert.notEqual(now, first);
    const r = await request(`${base}/`, { dispatcher: new Agent({ connect: { ca: next.pem.ca, checkServerIdentity: () => undefined } }), headers: { host: '8080-pub1.cove.test' } });
    assert.equal(r.statusCode, 200);
    await r.body.dump();
  });

  it('refuses a TLS traffic port without its certificate and key, or with unreadable ones', () => {
    const base = { COVE_CLUSTER_TOKEN: 'c'.repeat(32), COVE_NODE_CREDENTIAL_KEY: 'k'.repeat(32), COVE_SANDBOX_DOMAIN: 'cove.test', COVE_UPLOAD_SECRET: 'u'.repeat(32) };
    assert.throws(() => loadConfig({ ...base, COVE_EDGE_TRAFFIC_TLS_PORT: '3443' }), (e: unknown) => e instanceof ConfigError && /must be set together/.test(e.message));
    assert.throws(
      () => loadConfig({ ...base, COVE_EDGE_TRAFFIC_TLS_PORT: '3443', COVE_EDGE_TRAFFIC_TLS_CERT: '/nonexistent/cert.pem', COVE_EDGE_TRAFFIC_TLS_KEY: '/nonexistent/key.pem' }),
      (e: unknown) => e instanceof ConfigError && /COVE_EDGE_TRAFFIC_TLS_CERT/.test(e.message),
    );
  });
});
