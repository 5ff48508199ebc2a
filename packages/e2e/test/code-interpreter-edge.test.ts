// Port 49999 (the code-interpreter server) through the edge, as the unchanged `@e2b/code-interpreter` SDK reaches
// it (reference code-interpreter.md §1): header routing with E2B_SANDBOX_URL and Host routing `49999-<id>.<domain>`.
// A private sandbox's 49999 opens only with its own traffic token — not with none, a guessed one, another
// sandbox's, or its envd token — and the SDK's own calls (which carry it, plus X-Access-Token on runCode) work.
// The server here is a stand-in on a `base` sandbox that answers the SDK's routes and echoes what it was sent;
// the real template's own behaviour is tested where it is built.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CODE_INTERPRETER_PORT } from '@cove/contracts/sandbox';
import { Sandbox } from '@e2b/code-interpreter';
import { request } from 'undici';
import { deployment, eventually, type Deployment } from './deployment.js';

/** Answers /execute with one result whose text is what the request carried, and the context routes. */
const STAND_IN = `
require('http').createServer((q, s) => {
  let body = '';
  q.on('data', (d) => (body += d));
  q.on('end', () => {
    if (q.url.startsWith('/execute')) {
      const seen = { code: JSON.parse(body).code, accessToken: q.headers['x-access-token'] || null, port: q.headers['e2b-sandbox-port'] || null };
      s.end(JSON.stringify({ type: 'number_of_executions', execution_count: 1 }) + '\\n' +
        JSON.stringify({ type: 'result', text: JSON.stringify(seen), extra: {}, is_main_result: true }) + '\\n' +
        JSON.stringify({ type: 'end_of_execution' }) + '\\n');
    } else if (q.url.startsWith('/contexts')) {
      s.setHeader('content-type', 'application/json');
      s.end(q.method === 'POST' ? '{"id":"ctx-1","language":"python","cwd":"/home/user"}' : '[]');
    } else s.end('"OK"');
  });
}).listen(${CODE_INTERPRETER_PORT}, '0.0.0.0');
`;

describe(`port ${CODE_INTERPRETER_PORT} through the edge with the unchanged @e2b/code-interpreter SDK`, () => {
  let d: Deployment;
  const made: Sandbox[] = [];
  before(() => {
    d = deployment();
  });
  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  /** A base sandbox serving the stand-in on 49999 (the SDK's Sandbox class with another template). */
  async function withServer(opts: { private: boolean }): Promise<Sandbox> {
    const sbx = await Sandbox.create('base', { timeoutMs: 120_000, secure: true, network: { allowPublicTraffic: !opts.private } });
    made.push(sbx);
    await sbx.files.write('/tmp/stand-in.js', STAND_IN);
    await sbx.commands.run('node /tmp/stand-in.js >/dev/null 2>&1', { background: true });
    await eventually(async () => (await sbx.commands.run(`curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:${CODE_INTERPRETER_PORT}/health || true`)).stdout === '200', 15_000, 'the stand-in listens');
    return sbx;
  }

  /** One request to the edge's traffic port for the sandbox's 49999, by headers or by Host. */
  async function edge(sbx: Sandbox, how: 'headers' | 'host', headers: Record<string, string>): Promise<number> {
    const route =
      how === 'headers'
        ? { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': String(CODE_INTERPRETER_PORT) }
        : { host: `${CODE_INTERPRETER_PORT}-${sbx.sandboxId}.${d.env.E2B_DOMAIN}` };
    const r = await request(`http://127.0.0.1:${d.ports.edgeTraffic}/contexts`, { headers: { ...route, ...headers } });
    await r.body.dump();
    return r.statusCode;
  }

  test('a private, secure sandbox: the SDK’s runCode and context calls pass; nothing but its own traffic token opens the port', async () => {
    const sbx = await withServer({ private: true });
    const other = await withServer({ private: true });
    assert.ok(sbx.trafficAccessToken && other.trafficAccessToken, 'private sandboxes have traffic tokens');
    const envdToken = (sbx as unknown as { envdAccessToken?: string }).envdAccessToken;
    assert.ok(envdToken, 'a secure sandbox has an envd access token');

    // What the SDK sends (E2B_SANDBOX_URL mode: E2b-Sandbox-* headers, E2B-Traffic-Access-Token, X-Access-Token).
    const run = await sbx.runCode('1+1');
    assert.equal(run.error, undefined);
    assert.deepEqual(JSON.parse(run.text!), { code: '1+1', accessToken: envdToken, port: String(CODE_INTERPRETER_PORT) });
    assert.equal((await sbx.createCodeContext()).id, 'ctx-1');
    assert.deepEqual(await sbx.listCodeContexts(), []);

    for (const how of ['headers', 'host'] as const) {
      assert.equal(await edge(sbx, how, { 'e2b-traffic-access-token': sbx.trafficAccessToken! }), 200, `${how}: its own token`);
      const refused: Array<[string, Record<string, string>]> = [
        ['no token', {}],
        ['a guessed token', { 'e2b-traffic-access-token': 'guessed-traffic-token' }],
        ["another sandbox's token", { 'e2b-traffic-access-token': other.trafficAccessToken! }],
        ['its envd token in X-Access-Token', { 'x-access-token': envdToken }],
        ['its envd token as the traffic token', { 'e2b-traffic-access-token': envdToken }],
      ];
      for (const [what, headers] of refused) assert.equal(await edge(sbx, how, headers), 403, `${how}: ${what}`);
    }
  });

  test('a public, secure sandbox: the SDK reaches 49999 without a traffic token, by headers and by Host', async () => {
    const sbx = await withServer({ private: false });
    assert.equal(sbx.trafficAccessToken, undefined);
    const run = await sbx.runCode('print(1)');
    assert.equal(JSON.parse(run.text!).code, 'print(1)');
    for (const how of ['headers', 'host'] as const) assert.equal(await edge(sbx, how, {}), 200, how);
  });
});
