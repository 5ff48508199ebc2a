// Auto-resume on traffic (docs/pause-resume.md, "Edge: auto-resume"): a request for a paused sandbox asks the
// control plane to resume it and is then forwarded. A real edge, a fake node, and a fake control plane that
// resumes the way the real one does: a Create from the snapshot through the edge's control link.

import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { Readable } from 'node:stream';
import { CreateRequestSchema, PauseRequestSchema } from '@cove/contracts/orchestrator';
import { eventually } from '@cove/test-support/eventually';
import { metricSample } from '@cove/test-support/prometheus-text';
import { WebSocket } from 'undici';
import { FakeControlPlane, type ResumeCall, type ResumeHandler } from './fixtures/fake-control-plane.js';
import { FakeNode } from './fixtures/fake-node.js';
import { CLUSTER_TOKEN, create, linkHeaders, startEdge, type RunningEdge } from './fixtures/edge-harness.js';
import { send } from './fixtures/http-client.js';

const ENVD = 49983;
const NODE_ID = 'node-r';
const route = (id: string, port: number, extra: Record<string, string> = {}) => ({ 'e2b-sandbox-id': id, 'e2b-sandbox-port': String(port), ...extra });

/** Every gate made, opened after each test so that a failed one leaves no request waiting for the next. */
const gates: (() => void)[] = [];

/** A resume answer held until the test lets it go. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  gates.push(open);
  return { opened, open };
}

describe('edge auto-resume', () => {
  let cp: FakeControlPlane;
  let edge: RunningEdge;
  let node: FakeNode;
  let url: string;
  /** Traffic tokens of private sandboxes, as the control plane keeps them. */
  const tokens = new Map<string, string>();
  /** envd access tokens, which the control plane puts in every Create's spec (a resume's too). */
  const envdTokens = new Map<string, string>();
  /** Per-sandbox answers; the default resumes through the control link. */
  const behaviour = new Map<string, ResumeHandler>();

  const linkFor = (id: string) => linkHeaders(NODE_ID, { 'cove-sandbox-id': id, ...(tokens.has(id) ? { 'cove-traffic-access-token': tokens.get(id)! } : {}) });

  /** What the control plane does for an auto-resumable paused sandbox: check the token, Create from the snapshot. */
  const resumeThroughLink: ResumeHandler = async (call) => {
    const token = tokens.get(call.sandboxId);
    if (token !== undefined && call.body.port !== ENVD && call.body.trafficAccessToken !== token) {
      return { status: 403, body: { code: 403, message: 'invalid traffic access token' } };
    }
    const envdAccessToken = envdTokens.get(call.sandboxId) ?? '';
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: call.sandboxId, snapshotId: `snap-${call.sandboxId}`, envdAccessToken } }), {
      headers: linkFor(call.sandboxId),
    });
    return { status: 200, body: { sandboxID: call.sandboxId, nodeID: NODE_ID } };
  };

  async function createAndPause(id: string, token?: string, envdToken?: string): Promise<void> {
    if (token !== undefined) tokens.set(id, token);
    if (envdToken !== undefined) envdTokens.set(id, envdToken);
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: id, envdAccessToken: envdToken ?? '' } }), { headers: linkFor(id) });
    await pause(id);
  }

  /** A series of the edge's /metrics (0 when it has no sample yet). */
  async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const res = await fetch(`${edge.apiUrl}/metrics`, { headers: { authorization: `Bearer ${CLUSTER_TOKEN}` } });
    return metricSample(await res.text(), name, labels) ?? 0;
  }

  /** Until `n` traffic requests wait on a resume inside the edge (their own call or one they joined). */
  const untilWaiting = (n: number) => eventually(async () => (await metric('cove_edge_resume_waiting_requests')) === n, 10_000, `${n} requests waiting for a resume`, 10);

  async function pause(id: string): Promise<void> {
    await edge.sandboxClient.pause(create(PauseRequestSchema, { sandboxId: id, snapshotId: `snap-${id}`, memory: true }), { headers: linkFor(id) });
  }

  before(async () => {
    cp = await new FakeControlPlane(CLUSTER_TOKEN, (call) => (behaviour.get(call.sandboxId) ?? resumeThroughLink)(call)).start();
    edge = await startEdge({ COVE_CONTROL_PLANE_URL: cp.url });
    node = await new FakeNode({ nodeId: NODE_ID }).start();
    await node.heartbeat(edge.apiUrl);
    url = edge.trafficUrl;
  });
  afterEach(() => {
    for (const open of gates.splice(0)) open();
  });
  after(async () => {
    await edge.close();
    await node.close();
    await cp.close();
  });

  it('wakes a paused sandbox and forwards the request that woke it, POST body included', async () => {
    await createAndPause('wake1');
    assert.equal(node.sandboxes.has('wake1'), false);
    const chunk = Buffer.alloc(256 * 1024, 'z');
    const hash = createHash('sha256');
    for (let i = 0; i < 8; i++) hash.update(chunk);
    const body = Readable.from((function* () {
      for (let i = 0; i < 8; i++) yield chunk;
    })());
    const res = await send(`${url}/upload`, { method: 'POST', headers: route('wake1', ENVD, { 'content-type': 'application/octet-stream' }), body });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json(), { bytes: 8 * chunk.length, sha256: hash.digest('hex') });
    const calls = cp.callsFor('wake1');
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0]!.body, { port: ENVD });
    assert.equal(calls[0]!.headers['content-type'], 'application/json');
    // Running again: the next request is routed from the catalog without another call.
    assert.equal((await send(`${url}/`, { headers: route('wake1', 8080) })).text, 'hello from wake1:8080');
    assert.equal(cp.callsFor('wake1').length, 1);
  });

  it('shares one resume call among 10 concurrent requests', async () => {
    await createAndPause('crowd1');
    const answer = gate();
    behaviour.set('crowd1', async (call) => {
      await answer.opened;
      return resumeThroughLink(call);
    });
    const resumedBefore = await metric('cove_edge_resume_calls_total', { outcome: 'resumed' });
    const replies = Promise.all(
      Array.from({ length: 10 }, (_, i) => send(`${url}/n${i}`, { method: 'POST', headers: route('crowd1', 3000), body: `body ${i}` })),
    );
    // All ten are inside the edge, waiting on the one call, before the control plane answers it.
    await untilWaiting(10);
    assert.equal(cp.callsFor('crowd1').length, 1);
    answer.open();
    for (const r of await replies) assert.equal(r.text, 'hello from crowd1:3000');
    assert.equal(cp.callsFor('crowd1').length, 1);
    assert.equal(await metric('cove_edge_resume_calls_total', { outcome: 'resumed' }), resumedBefore + 1);
    assert.equal(await metric('cove_edge_resume_waiting_requests'), 0);
  });

  it('sends the cluster token and the traffic token, never the client authorization, to the control plane', async () => {
    await createAndPause('priv1', 'traffic-secret-p1');
    const res = await send(`${url}/`, {
      headers: route('priv1', 8080, {
        authorization: 'Bearer client-credentials',
        'x-access-token': 'envd-token',
        cookie: 'session=1',
        'e2b-traffic-access-token': 'traffic-secret-p1',
      }),
    });
    assert.equal(res.status, 200, res.text);
    const [call] = cp.callsFor('priv1');
    assert.equal(call!.headers.authorization, `Bearer ${CLUSTER_TOKEN}`);
    for (const h of ['x-access-token', 'cookie', 'e2b-traffic-access-token', 'e2b-sandbox-id']) assert.equal(call!.headers[h], undefined, h);
    assert.deepEqual(call!.body, { port: 8080, trafficAccessToken: 'traffic-secret-p1' });
    // The edge checks the token itself once the sandbox runs again.
    assert.equal((await send(`${url}/`, { headers: route('priv1', 8080) })).status, 403);
    // The client's own authorization still reaches the sandbox.
    const seen = await send(`${url}/headers`, { headers: route('priv1', ENVD, { authorization: 'Bearer client-credentials' }) });
    assert.equal(seen.json().authorization, 'Bearer client-credentials');
  });

  it('answers 403 JSON when the control plane refuses the traffic token, and the sandbox stays paused', async () => {
    await createAndPause('priv2', 'traffic-secret-p2');
    const res = await send(`${url}/`, { headers: route('priv2', 8080, { 'e2b-traffic-access-token': 'wrong' }) });
    assert.equal(res.status, 403);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.deepEqual(res.json(), {
      message: 'The sandbox is paused and this request may not resume it (missing or invalid e2b-traffic-access-token header)',
      sandboxId: 'priv2',
      code: 403,
    });
    assert.equal(node.sandboxes.has('priv2'), false);
    assert.equal(cp.callsFor('priv2').length, 0, 'refused by the edge itself: it knows the paused sandbox is private');
  });

  it("does not wake a paused private sandbox through envd's port without its envd access token or traffic token", async () => {
    await createAndPause('privenv1', 'traffic-secret-e1', 'envd-secret-e1');
    const refused: Record<string, string>[] = [
      {},
      { 'x-access-token': 'envd-secret-OTHER' },
      { 'x-access-token': '' },
      { 'e2b-traffic-access-token': 'traffic-secret-WRONG' },
      { 'x-access-token': 'traffic-secret-e1' },
    ];
    for (const extra of refused) {
      const res = await send(`${url}/health`, { headers: route('privenv1', ENVD, extra) });
      assert.equal(res.status, 403, JSON.stringify(extra));
      assert.deepEqual(res.json(), {
        message: 'The sandbox is paused and this request may not resume it (missing or invalid e2b-traffic-access-token or x-access-token header)',
        sandboxId: 'privenv1',
        code: 403,
      });
    }
    // A WebSocket upgrade is held to the same rule.
    const ws = new WebSocket(`${url.replace('http', 'ws')}/ws`, { headers: route('privenv1', ENVD) } as any);
    const [event] = await Promise.race([once(ws, 'error'), once(ws, 'open')]);
    assert.equal((event as Event).type, 'error');
    assert.equal(cp.callsFor('privenv1').length, 0, 'the control plane was never asked');
    assert.equal(node.sandboxes.has('privenv1'), false, 'still paused');

    // The SDK's own envd request (its X-Access-Token) wakes it, as on E2B.
    const woke = await send(`${url}/health`, { headers: route('privenv1', ENVD, { 'x-access-token': 'envd-secret-e1' }) });
    assert.equal(woke.status, 200, woke.text);
    assert.equal(node.sandboxes.has('privenv1'), true);
    assert.equal(await edge.edge.store.getPaused('privenv1'), undefined, 'running again: its route guards it');
    // Paused again (the resume's Create carried the envd token too): the traffic token also wakes it via envd.
    await pause('privenv1');
    assert.equal((await send(`${url}/health`, { headers: route('privenv1', ENVD) })).status, 403);
    assert.equal((await send(`${url}/health`, { headers: route('privenv1', ENVD, { 'e2b-traffic-access-token': 'traffic-secret-e1' }) })).status, 200);
    assert.equal(cp.callsFor('privenv1').length, 2);
  });

  it('keeps the wake credentials only while the pause holds: a failed pause gives the route back', async () => {
    await edge.sandboxClient.create(create(CreateRequestSchema, { sandbox: { sandboxId: 'privenv2', envdAccessToken: 'envd-secret-e2' } }), {
      headers: linkHeaders(NODE_ID, { 'cove-sandbox-id': 'privenv2', 'cove-traffic-access-token': 'traffic-secret-e2' }),
    });
    node.beforePause = async () => {
      throw new Error('dump failed');
    };
    try {
      await assert.rejects(pause('privenv2'));
    } finally {
      node.beforePause = undefined;
    }
    assert.equal(await edge.edge.store.getPaused('privenv2'), undefined);
    // Still running and routed: envd's port needs no traffic token (envd checks its own access token).
    assert.equal((await send(`${url}/health`, { headers: route('privenv2', ENVD) })).status, 200);
    assert.equal(cp.callsFor('privenv2').length, 0);
  });

  it('asks again for a request whose token differs from the one a shared call was refused for', async () => {
    await createAndPause('priv3', 'traffic-secret-p3');
    // As if paused through another edge with its own catalog: this edge cannot judge, the control plane does.
    await edge.edge.store.deletePaused('priv3');
    const answer = gate();
    behaviour.set('priv3', async (call) => {
      await answer.opened;
      return resumeThroughLink(call);
    });
    // The wrong token's call is in flight when the right one arrives and joins it.
    const bad = send(`${url}/`, { headers: route('priv3', 8080, { 'e2b-traffic-access-token': 'wrong' }) });
    await untilWaiting(1);
    const good = send(`${url}/`, { headers: route('priv3', 8080, { 'e2b-traffic-access-token': 'traffic-secret-p3' }) });
    await untilWaiting(2);
    assert.equal(cp.callsFor('priv3').length, 1);
    answer.open();
    assert.equal((await bad).status, 403);
    const allowed = await good;
    assert.equal(allowed.status, 200, allowed.text);
    assert.deepEqual(cp.callsFor('priv3').map((c) => c.body.trafficAccessToken), ['wrong', 'traffic-secret-p3']);
  });

  it('answers the usual 502 "sandbox not found" when the control plane does not know the sandbox', async () => {
    behaviour.set('gone1', async () => ({ status: 404, body: { code: 404, message: 'sandbox gone1 not found' } }));
    const res = await send(`${url}/health`, { headers: route('gone1', ENVD) });
    assert.equal(res.status, 502);
    assert.equal(res.text, '{"message":"The sandbox was not found","sandboxId":"gone1","code":502}');
    assert.equal(cp.callsFor('gone1').length, 1);
  });

  it('answers 409 JSON while the sandbox is still transitioning', async () => {
    behaviour.set('busy1', async () => ({ status: 409, body: { code: 409, message: 'sandbox is pausing' } }));
    const res = await send(`${url}/`, { headers: route('busy1', ENVD) });
    assert.equal(res.status, 409);
    assert.deepEqual(res.json(), { message: 'sandbox is still transitioning', sandboxId: 'busy1', code: 409 });
  });

  it('answers 429 JSON when the team is at its sandbox limit', async () => {
    behaviour.set('full1', async () => ({ status: 429, body: { code: 429, message: 'sandbox limit reached' } }));
    const res = await send(`${url}/`, { headers: route('full1', ENVD) });
    assert.equal(res.status, 429);
    assert.deepEqual(res.json(), {
      message: 'The sandbox could not be resumed: the team has reached its limit of running sandboxes',
      sandboxId: 'full1',
      code: 429,
    });
  });

  it('answers 503 JSON when the control plane fails or answers nonsense', async () => {
    const unavailable = { message: 'The sandbox could not be resumed: the control plane is unavailable', code: 503 };
    const cases: [string, Awaited<ReturnType<ResumeHandler>>][] = [
      ['err500', { status: 500, body: { code: 500, message: 'database down' } }],
      ['err502', { status: 502, raw: '<html>bad gateway</html>' }],
      ['err401', { status: 401, body: { code: 401, message: 'invalid cluster token' } }],
      ['badbody', { status: 200, body: { sandboxID: 'badbody' } }],
      ['notjson', { status: 200, raw: 'resumed!' }],
      ['otherid', { status: 200, body: { sandboxID: 'someoneelse', nodeID: NODE_ID } }],
    ];
    for (const [id, answer] of cases) {
      behaviour.set(id, async () => answer);
      const res = await send(`${url}/`, { headers: route(id, ENVD) });
      assert.equal(res.status, 503, id);
      assert.deepEqual(res.json(), { ...unavailable, sandboxId: id }, id);
    }
  });

  it('routes to the node the control plane named when the resume did not pass through this edge', async () => {
    // As if resumed through another edge with its own catalog: the node runs it, this catalog never learns it.
    const elsewhere: ResumeHandler = async (call) => {
      node.addSandbox(call.sandboxId);
      return { status: 200, body: { sandboxID: call.sandboxId, nodeID: NODE_ID } };
    };
    behaviour.set('else1', elsewhere);
    const res = await send(`${url}/`, { headers: route('else1', ENVD) });
    assert.equal(res.text, 'hello from else1:49983');
    // The control plane judged this request's port and (absent) token: it is forwarded too.
    behaviour.set('else2', elsewhere);
    assert.equal((await send(`${url}/`, { headers: route('else2', 8080) })).text, 'hello from else2:8080');
    // A node the edge does not know: nothing to route to.
    behaviour.set('else3', async (call) => ({ status: 200, body: { sandboxID: call.sandboxId, nodeID: 'node-unknown' } }));
    const lost = await send(`${url}/`, { headers: route('else3', ENVD) });
    assert.equal(lost.status, 502);
    assert.deepEqual(lost.json(), { message: 'The sandbox was not found', sandboxId: 'else3', code: 502 });
  });

  it('wakes a sandbox for a WebSocket upgrade', async () => {
    await createAndPause('ws1');
    const answer = gate();
    behaviour.set('ws1', async (call) => {
      await answer.opened;
      return resumeThroughLink(call);
    });
    const ws = new WebSocket(`ws://${new URL(url).host}/ws`, { headers: route('ws1', 8080) } as any);
    const opened = once(ws as any, 'open');
    // The upgrade waits on the resume like any request.
    await untilWaiting(1);
    answer.open();
    await opened;
    const got = new Promise<string>((resolve) => ws.addEventListener('message', (e) => resolve(String(e.data)), { once: true }));
    ws.send('hello after resume');
    assert.equal(await got, 'hello after resume');
    const closed = once(ws as any, 'close');
    ws.close(1000);
    await closed;
    assert.equal(cp.callsFor('ws1').length, 1);
  });

  it('answers a WebSocket upgrade the control plane refuses with the mapped status', async () => {
    behaviour.set('ws2', async () => ({ status: 409, body: { code: 409, message: 'resuming' } }));
    const res = await send(`${url}/ws`, {
      headers: route('ws2', 8080, { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' }),
    });
    assert.equal(res.status, 409);
    assert.deepEqual(res.json(), { message: 'sandbox is still transitioning', sandboxId: 'ws2', code: 409 });
  });

  it('does not ask the control plane about requests that fail routing or sandboxes it knows', async () => {
    const before = cp.calls.length;
    assert.equal((await send(`${url}/`, { headers: { host: 'foo.example.com' } })).status, 400);
    assert.equal((await send(`${url}/`, { headers: route('../x', 80) })).status, 400);
    // Learnt from a heartbeat only (recovered): known, so routed or refused by the edge as before.
    node.addSandbox('rec1');
    await node.heartbeat(edge.apiUrl);
    assert.equal((await send(`${url}/`, { headers: route('rec1', ENVD) })).status, 200);
    assert.equal((await send(`${url}/`, { headers: route('rec1', 8080) })).status, 403);
    assert.equal(cp.calls.length, before);
  });

  it('forwards nothing for a client that left while the sandbox was resuming', async () => {
    await createAndPause('left1');
    const answer = gate();
    behaviour.set('left1', async (call) => {
      await answer.opened;
      return resumeThroughLink(call);
    });
    const goneBefore = await metric('cove_edge_traffic_client_gone_total');
    const client = httpRequest(`${url}/headers`, { headers: route('left1', ENVD) });
    client.on('error', () => undefined);
    client.end();
    await untilWaiting(1);
    const seenBefore = node.proxyHeaders.length;
    const closed = new Promise((r) => client.once('close', r)); // once() would reject on the hang-up's 'error'
    client.destroy();
    await closed;
    answer.open();
    // The edge routed the request once the sandbox ran, found its client gone, and forwarded nothing.
    await eventually(async () => (await metric('cove_edge_traffic_client_gone_total')) === goneBefore + 1, 10_000, 'the request dropped for its gone client', 10);
    assert.equal(node.proxyHeaders.length, seenBefore);
    // The sandbox itself is running again.
    assert.equal((await send(`${url}/`, { headers: route('left1', ENVD) })).status, 200);
  });
});

describe('edge auto-resume: configuration and reachability', () => {
  it('answers 502 "sandbox not found" as before when no control plane is configured', async () => {
    const edge = await startEdge();
    try {
      const res = await send(`${edge.trafficUrl}/`, { headers: route('paused1', ENVD) });
      assert.equal(res.status, 502);
      assert.equal(res.text, '{"message":"The sandbox was not found","sandboxId":"paused1","code":502}');
    } finally {
      await edge.close();
    }
  });

  it('answers 503 JSON when the control plane is unreachable', async () => {
    const dead = createServer().listen(0, '127.0.0.1');
    await once(dead, 'listening');
    const port = (dead.address() as { port: number }).port;
    await new Promise((r) => dead.close(r));
    const edge = await startEdge({ COVE_CONTROL_PLANE_URL: `http://127.0.0.1:${port}` });
    try {
      const res = await send(`${edge.trafficUrl}/`, { headers: route('paused2', ENVD) });
      assert.equal(res.status, 503);
      assert.deepEqual(res.json(), { message: 'The sandbox could not be resumed: the control plane is unavailable', sandboxId: 'paused2', code: 503 });
    } finally {
      await edge.close();
    }
  });

  it('gives up with 503 when the control plane does not answer in time', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const cp = await new FakeControlPlane(CLUSTER_TOKEN, async (_call: ResumeCall) => {
      await released;
      return { status: 404 };
    }).start();
    const edge = await startEdge({ COVE_CONTROL_PLANE_URL: cp.url }, { resumeTimeoutMs: 300 });
    try {
      const started = Date.now();
      const res = await send(`${edge.trafficUrl}/`, { headers: route('slow1', ENVD) });
      assert.equal(res.status, 503);
      assert.ok(Date.now() - started < 5_000);
      assert.equal(cp.calls.length, 1);
    } finally {
      release();
      await edge.close();
      await cp.close();
    }
  });
});
