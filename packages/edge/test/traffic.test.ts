// The sandbox traffic port: routing, streaming, WebSocket, CORS, the 502/4xx JSON contract and traffic
// tokens, through a real edge to the fake node's traffic proxy.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { Readable } from 'node:stream';
import { CreateRequestSchema } from '@cove/contracts/orchestrator';
import { WebSocket } from 'undici';
import { CLOSED_PORT, FakeNode } from './fixtures/fake-node.js';
import { create, linkHeaders, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { openRequest, send } from './fixtures/http-client.js';

const MB = 1024 * 1024;

describe('edge traffic port', () => {
  let edge: RunningEdge;
  let node: FakeNode;
  let url: string;
  const route = (id: string, port: number | string, extra: Record<string, string> = {}) => ({
    'e2b-sandbox-id': id,
    'e2b-sandbox-port': String(port),
    ...extra,
  });

  before(async () => {
    edge = await startEdge();
    node = await new FakeNode({ nodeId: 'node-t' }).start();
    await node.heartbeat(edge.apiUrl);
    url = edge.trafficUrl;
    for (const [id, token] of [['pub1', undefined], ['priv1', 'traffic-secret-1']] as const) {
      await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: id } }), {
        headers: linkHeaders('node-t', { 'cove-sandbox-id': id, ...(token ? { 'cove-traffic-access-token': token } : {}) }),
      });
    }
  });
  after(async () => {
    await edge.close();
    await node.close();
  });

  it('routes by E2b-Sandbox-* headers, sets the node headers and strips a spoofed node token', async () => {
    const res = await send(`${url}/headers`, {
      headers: route('pub1', 49983, { 'cove-node-token': 'spoofed', 'x-access-token': 'envd-token', authorization: 'Basic dXNlcjo=' }),
    });
    assert.equal(res.status, 200, res.text);
    const seen = res.json();
    assert.equal(seen['cove-node-token'], node.nodeToken);
    assert.equal(seen['e2b-sandbox-id'], 'pub1');
    assert.equal(seen['e2b-sandbox-port'], '49983');
    assert.equal(seen['x-access-token'], 'envd-token');
    assert.equal(seen.authorization, 'Basic dXNlcjo=');
    assert.equal(seen.host, new URL(url).host);
    assert.equal(seen['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-host'], new URL(url).host);
  });

  it('routes by Host <port>-<id>.<domain> and always sets the routing headers', async () => {
    const res = await send(`${url}/`, { headers: { host: '8080-pub1.cove.test' } });
    assert.equal(res.status, 200);
    assert.equal(res.text, 'hello from pub1:8080');
    const legacy = await send(`${url}/headers`, { headers: { host: '3000-pub1-client7.cove.test:443' } });
    assert.equal(legacy.json()['e2b-sandbox-port'], '3000');
    assert.equal(legacy.json().host, '3000-pub1-client7.cove.test:443');
  });

  it('streams a 50 MB upload', async () => {
    const chunk = Buffer.alloc(MB, 'abc');
    const hash = createHash('sha256');
    for (let i = 0; i < 50; i++) hash.update(chunk);
    const body = Readable.from((function* () {
      for (let i = 0; i < 50; i++) yield chunk;
    })());
    const res = await send(`${url}/upload`, { method: 'POST', headers: route('pub1', 49983, { 'content-type': 'application/octet-stream' }), body });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json(), { bytes: 50 * MB, sha256: hash.digest('hex') });
  });

  it('streams a 50 MB download', async () => {
    const res = await openRequest(`${url}/download?bytes=${50 * MB}`, { headers: route('pub1', 49983) });
    assert.equal(res.statusCode, 200);
    let bytes = 0;
    for await (const c of res) bytes += (c as Buffer).length;
    assert.equal(bytes, 50 * MB);
  });

  it('cancels the upstream when the client goes away mid-download', async () => {
    const res = await openRequest(`${url}/download?bytes=${1024 * MB}`, { headers: route('pub1', 49983) });
    const aborted = once(node.events, 'download-aborted');
    const it = res[Symbol.asyncIterator]();
    await it.next();
    res.destroy();
    await aborted;
  });

  it('cuts the client response when the upstream dies mid-body', async () => {
    const res = await openRequest(`${url}/die`, { headers: route('pub1', 49983) });
    assert.equal(res.statusCode, 200);
    await assert.rejects(async () => {
      for await (const _ of res) void _;
    });
  });

  it('flushes server-sent events as they come', async () => {
    const res = await openRequest(`${url}/sse`, { headers: route('pub1', 8000) });
    assert.equal(res.headers['content-type'], 'text/event-stream');
    const it = res[Symbol.asyncIterator]();
    const first = await it.next();
    // The upstream holds the response open until released: the first event arrived on its own.
    assert.equal(String(first.value), 'data: one\n\n');
    node.releaseSse();
    let rest = '';
    for (let r = await it.next(); !r.done; r = await it.next()) rest += String(r.value);
    assert.equal(rest, 'data: two\n\n');
  });

  it('proxies WebSocket upgrades', async () => {
    const ws = new WebSocket(`ws://${new URL(url).host}/ws`, { headers: route('pub1', 8080) } as any);
    await once(ws as any, 'open');
    const got = new Promise<string>((resolve) => ws.addEventListener('message', (e) => resolve(String(e.data)), { once: true }));
    ws.send('ping through the edge');
    assert.equal(await got, 'ping through the edge');
    const closed = once(ws as any, 'close');
    ws.close(1000);
    await closed;
  });

  it('answers CORS preflights at the edge and adds CORS headers to proxied responses', async () => {
    const pre = await send(`${url}/process.Process/Start`, {
      method: 'OPTIONS',
      headers: {
        origin: 'http://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'e2b-sandbox-id, e2b-sandbox-port, x-access-token, connect-protocol-version, x-metadata-owner',
      },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], 'http://app.example');
    assert.match(String(pre.headers['access-control-allow-methods']), /POST/);
    const allowed = String(pre.headers['access-control-allow-headers']).split(', ');
    for (const h of ['e2b-sandbox-id', 'x-access-token', 'connect-protocol-version', 'x-metadata-owner', 'authorization']) assert.ok(allowed.includes(h), h);
    assert.match(String(pre.headers['access-control-expose-headers']), /Grpc-Status/i);

    const res = await send(`${url}/`, { headers: route('pub1', 49983, { origin: 'http://app.example' }) });
    assert.equal(res.headers['access-control-allow-origin'], 'http://app.example');
  });

  it('answers 502 with the exact SDK body for an unknown sandbox', async () => {
    const res = await send(`${url}/health`, { headers: route('nosuch1', 49983) });
    assert.equal(res.status, 502);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(res.text, '{"message":"The sandbox was not found","sandboxId":"nosuch1","code":502}');
  });

  it('passes the node proxy 502 for a closed port through', async () => {
    const res = await send(`${url}/`, { headers: route('pub1', CLOSED_PORT) });
    assert.equal(res.status, 502);
    assert.deepEqual(res.json(), { message: 'The sandbox is running but port is not open', sandboxId: 'pub1', port: CLOSED_PORT, code: 502 });
  });

  it('enforces the traffic token of a private sandbox on ports other than envd', async () => {
    const none = await send(`${url}/`, { headers: route('priv1', 8080) });
    assert.equal(none.status, 403);
    assert.equal(none.json().code, 403);
    assert.equal((await send(`${url}/`, { headers: route('priv1', 8080, { 'e2b-traffic-access-token': 'wrong' }) })).status, 403);
    const ok = await send(`${url}/`, { headers: route('priv1', 8080, { 'e2b-traffic-access-token': 'traffic-secret-1' }) });
    assert.equal(ok.status, 200);
    assert.equal((await send(`${url}/`, { headers: route('priv1', 49983) })).status, 200);
    const pub = await send(`${url}/`, { headers: route('pub1', 8080) });
    assert.equal(pub.status, 200);
  });

  it('fails closed on non-envd ports of sandboxes learnt only from heartbeats', async () => {
    node.addSandbox('rec1');
    await node.heartbeat(edge.apiUrl);
    assert.equal((await send(`${url}/`, { headers: route('rec1', 49983) })).status, 200);
    const res = await send(`${url}/`, { headers: route('rec1', 8080, { 'e2b-traffic-access-token': 'anything' }) });
    assert.equal(res.status, 403);
    assert.equal(res.json().sandboxId, 'rec1');
    node.sandboxes.delete('rec1');
  });

  it('restores private/public state of recovered sandboxes from heartbeat traffic info', async () => {
    const sha = (t: string) => createHash('sha256').update(t).digest('hex');
    node.addSandbox('rec2');
    node.addSandbox('rec3');
    node.addSandbox('rec4');
    // rec4 is first learnt without traffic info (fails closed), then settled by a later beat.
    await node.heartbeat(edge.apiUrl);
    assert.equal((await send(`${url}/`, { headers: route('rec4', 8080) })).status, 403);
    await node.heartbeat(edge.apiUrl, {
      sandboxTraffic: [
        { sandboxId: 'rec2', trafficTokenSha256: sha('tok-rec2') },
        { sandboxId: 'rec3', trafficTokenSha256: '' },
        { sandboxId: 'rec4', trafficTokenSha256: '' },
      ],
    });
    assert.equal((await send(`${url}/`, { headers: route('rec2', 8080) })).status, 403);
    assert.equal((await send(`${url}/`, { headers: route('rec2', 8080, { 'e2b-traffic-access-token': 'tok-rec2' }) })).status, 200);
    assert.equal((await send(`${url}/`, { headers: route('rec3', 8080) })).status, 200);
    assert.equal((await send(`${url}/`, { headers: route('rec4', 8080) })).status, 200);
    for (const id of ['rec2', 'rec3', 'rec4']) node.sandboxes.delete(id);
  });

  it('answers bad routing input with 4xx JSON', async () => {
    const cases: [Record<string, string>, number][] = [
      [{ host: 'foo.example.com' }, 400],
      [{ host: '0-pub1.cove.test' }, 400],
      [{ host: '99999-pub1.cove.test' }, 400],
      [{ host: 'abc-pub1.cove.test' }, 400],
      [{ host: '80-Pub_1.cove.test' }, 400],
      [route('pub1', 'abc'), 400],
      [route('../x', 80), 400],
      [{}, 400],
    ];
    for (const [headers, status] of cases) {
      const res = await send(`${url}/`, { headers });
      assert.equal(res.status, status, JSON.stringify(headers));
      assert.equal(res.json().code, status);
      assert.equal(typeof res.json().message, 'string');
    }
    const huge = await send(`${url}/`, { headers: route('pub1', 49983, { 'x-big': 'a'.repeat(20_000) }) });
    assert.equal(huge.status, 431);
    assert.equal(huge.json().code, 431);
  });

  it('answers 502 JSON when the node proxy is unreachable', async () => {
    const dead = createServer().listen(0, '127.0.0.1');
    await once(dead, 'listening');
    const deadPort = (dead.address() as { port: number }).port;
    await new Promise((r) => dead.close(r));
    const ghost = await new FakeNode({ nodeId: 'node-ghost' }).start();
    ghost.proxyUrl = `http://127.0.0.1:${deadPort}`;
    await ghost.heartbeat(edge.apiUrl, { sandboxIds: ['ghost1'] });
    const res = await send(`${url}/`, { headers: route('ghost1', 49983) });
    assert.equal(res.status, 502);
    assert.deepEqual(res.json(), { message: 'The sandbox node is unreachable', sandboxId: 'ghost1', code: 502 });
    await ghost.close();
  });
});
