// A stopping node is not held by its clients (app.ts close()). Node's http2 server ends a closed session's socket
// and then waits for the peer to end its side; a client that never does (Node's own http2 client after a GOAWAY,
// or a bare TCP connection that never speaks) held close() until main.ts's 20 s exit, so every restart or leave of a
// joined node took 20 s (packages/e2e/test/byoc-node-join.test.ts).
import assert from 'node:assert/strict';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { connect as tcpConnect, type Socket } from 'node:net';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { instance, NODE_TOKEN, startOrchestrator, teardown } from './orchestrator-fixture.js';

const I = instance('covtcls', 'tcl-', '10.196.0.0/16');
/** Well under the 20 s exit: what close() takes once nothing in flight is left is milliseconds. */
const CLOSE_BOUND_MS = 5_000;

/** One unary Connect call (JSON) on `session`; resolves to the HTTP status. */
function info(session: ClientHttp2Session): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/cove.orchestrator.v1.InfoService/Info', 'content-type': 'application/json', authorization: `Bearer ${NODE_TOKEN}` });
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', () => undefined);
    req.on('end', () => resolve(status));
    req.on('error', reject);
    req.end('{}');
  });
}

describe('closing a node whose clients keep their connections open', { timeout: 120_000 }, () => {
  before(() => teardown(I));
  after(() => teardown(I));

  it('close() ends without waiting for clients that never close their side', async () => {
    const node = await startOrchestrator(I, { COVE_WARM_POOL: '' });
    const port = Number(new URL(node.rpcUrl).port);
    // An HTTP/2 client with an answered call behind it that then sits on its connection, and a TCP connection that
    // never sends a byte.
    const held = h2connect(node.rpcUrl);
    held.on('error', () => undefined);
    assert.equal(await info(held), 200);
    const bare: Socket = tcpConnect(port, '127.0.0.1');
    bare.on('error', () => undefined);
    await once(bare, 'connect');
    try {
      const t0 = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const closed = await Promise.race([
        node.close().then(() => true),
        new Promise<false>((r) => (timer = setTimeout(() => r(false), CLOSE_BOUND_MS))),
      ]);
      clearTimeout(timer);
      assert.ok(closed, `close() still waiting after ${Date.now() - t0} ms`);
      // The node really is closed: nothing answers on its port.
      const outcome = await new Promise<string>((resolve) => {
        const probe = tcpConnect(port, '127.0.0.1');
        probe.once('connect', () => (probe.destroy(), resolve('connected')));
        probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      });
      assert.equal(outcome, 'ECONNREFUSED');
    } finally {
      held.destroy();
      bare.destroy();
    }
  });
});
