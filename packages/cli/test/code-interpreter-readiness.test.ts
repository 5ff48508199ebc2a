// How `cove up` decides the code-interpreter template is ready: from the edge's GET /v1/nodes (a real HTTP server
// answering as the edge does, with the node Info the edge relays). Ready means a healthy node listing it in its
// ready templates; a draining node's, a node still building it, or one reporting nothing are not; the wait ends
// with an error naming each node's state.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { CODE_INTERPRETER_TEMPLATE_ID as CI } from '@cove/contracts/sandbox';
import { codeInterpreterOn, edgeNodes, waitForCodeInterpreter, type EdgeNodeView } from '../src/code-interpreter.js';

const TOKEN = 'cluster-token-0123456789';

describe('code-interpreter readiness as cove up waits for it', () => {
  let server: Server;
  let url: string;
  /** What the stand-in edge answers next (one entry per request; the last one repeats). */
  let answers: EdgeNodeView[][] = [];
  let requests = 0;

  before(async () => {
    server = createServer((req, res) => {
      if (req.url !== '/v1/nodes' || req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.writeHead(403, { 'content-type': 'application/json' }).end('{"code":403,"message":"invalid cluster token"}');
        return;
      }
      const body = answers[Math.min(requests++, answers.length - 1)];
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  /** A node as the edge relays it: `ci` = code-interpreter-v1 among its ready templates (with a warm pool of 1). */
  const node = (nodeId: string, status: string, reports: 'ci' | 'base-only' | 'nothing'): EdgeNodeView => ({
    nodeId,
    status,
    info: {
      ...(reports === 'nothing' ? {} : { readyTemplates: reports === 'ci' ? ['base', CI] : ['base'] }),
      warmPools: [{ templateId: 'base', ready: 2, target: 2 }, { templateId: CI, ready: reports === 'ci' ? 1 : 0, target: 1 }],
    },
  });

  test('waits while nodes report nothing or are still building it, and ends when one healthy node has it ready', async () => {
    requests = 0;
    answers = [
      [],
      [node('a', 'healthy', 'nothing'), node('b', 'healthy', 'nothing')],
      [node('a', 'healthy', 'base-only'), node('b', 'healthy', 'base-only')],
      // Ready on a draining node hands nothing out: still waiting.
      [node('a', 'draining', 'ci'), node('b', 'healthy', 'base-only')],
      [node('a', 'draining', 'ci'), node('b', 'healthy', 'ci')],
    ];
    const lines: string[] = [];
    const states = await waitForCodeInterpreter(() => edgeNodes(url, async () => TOKEN), { timeoutMs: 30_000, pollMs: 1, say: (l) => lines.push(l) });
    assert.equal(requests, 5, 'it polled until the last picture');
    assert.deepEqual(
      states.map((s) => [s.nodeId, s.state, s.nodeStatus, s.warm]),
      [['a', 'ready', 'draining', 1], ['b', 'ready', 'healthy', 1]],
    );
    assert.match(lines.at(-1)!, /ready on 1\/2 node\(s\)/);
    assert.ok(lines.some((l) => /a: not reported, 0\/1 warm; b: not reported, 0\/1 warm/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /a: not ready yet, 0\/1 warm/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /a: ready, 1\/1 warm \(node draining\); b: not ready yet/.test(l)), lines.join('\n'));
  });

  test('a node starting an older build while it builds the changed recipe is ready, and says so', async () => {
    requests = 0;
    const upgraded = node('a', 'healthy', 'ci');
    upgraded.info!.buildingTemplates = [CI];
    answers = [[upgraded, node('b', 'healthy', 'ci')]];
    const lines: string[] = [];
    const states = await waitForCodeInterpreter(() => edgeNodes(url, async () => TOKEN), { timeoutMs: 30_000, pollMs: 1, say: (l) => lines.push(l) });
    assert.deepEqual(states.map((s) => [s.nodeId, s.state, s.rebuilding]), [['a', 'ready', true], ['b', 'ready', false]]);
    assert.match(lines.at(-1)!, /ready on 2\/2 node\(s\) \(a: ready \(an older build; the new one is building\), 1\/1 warm; b: ready, 1\/1 warm\)/);
  });

  test('a node restarted by this up counts only once the edge relays an Info from the new process', async () => {
    requests = 0;
    const launchedAt = Date.parse('2026-12-03T10:00:00Z');
    const from = (n: EdgeNodeView, startedAt: string): EdgeNodeView => ({ ...n, info: { ...n.info, startedAt } });
    answers = [
      // The previous process's last heartbeat: it had the template ready, the new one has not said so yet.
      [from(node('a', 'healthy', 'ci'), '2026-12-03T09:00:00Z')],
      [from(node('a', 'healthy', 'base-only'), '2026-12-03T10:00:02.500Z')],
      [from(node('a', 'healthy', 'ci'), '2026-12-03T10:00:02.500Z')],
    ];
    const lines: string[] = [];
    const states = await waitForCodeInterpreter(() => edgeNodes(url, async () => TOKEN, new Map([['a', launchedAt]])), { timeoutMs: 30_000, pollMs: 1, say: (l) => lines.push(l) });
    assert.equal(requests, 3, 'the stale view did not end the wait');
    assert.deepEqual(states.map((s) => [s.nodeId, s.state]), [['a', 'ready']]);
    assert.ok(lines.some((l) => /a: not reported/.test(l)), lines.join('\n'));
    // A node this up did not start is taken as the edge sees it.
    requests = 0;
    answers = [[from(node('b', 'healthy', 'ci'), '2026-12-03T09:00:00Z')]];
    assert.deepEqual(codeInterpreterOn(await edgeNodes(url, async () => TOKEN, new Map([['a', launchedAt]]))).map((s) => s.state), ['ready']);
  });

  test('gives up with an error naming each node’s state', async () => {
    requests = 0;
    answers = [[node('a', 'healthy', 'base-only'), node('b', 'unhealthy', 'ci')]];
    await assert.rejects(waitForCodeInterpreter(() => edgeNodes(url, async () => TOKEN), { timeoutMs: 50, pollMs: 5, say: () => undefined }), (err: Error) => {
      assert.match(err.message, /not ready on any node within 0 s: ready on 0\/2 node\(s\) \(a: not ready yet, 0\/1 warm; b: ready, 1\/1 warm \(node unhealthy\)\)/);
      assert.match(err.message, /--code-interpreter-wait 0/);
      return true;
    });
  });

  test('an edge that refuses the token is reported, not read as "no nodes"', async () => {
    await assert.rejects(edgeNodes(url, async () => 'wrong-token'), /answered 403/);
    await assert.rejects(waitForCodeInterpreter(() => edgeNodes(url, async () => 'wrong-token'), { timeoutMs: 20, pollMs: 5, say: () => undefined }), /answered 403/);
  });
});
