// Issue 2 proof: bad input to envd, sent the way clients reach it (through the edge),
// gets the right error and nothing crashes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment } from './deployment.js';

describe('envd bad input through the edge', () => {
  let sbx: Sandbox;
  let token: string;
  before(async () => {
    deployment();
    sbx = await Sandbox.create({ timeoutMs: 120_000 });
    token = (sbx as unknown as { envdAccessToken: string }).envdAccessToken;
    assert.ok(token, 'the control plane issued an envd access token');
  });
  after(async () => {
    await sbx?.kill();
  });

  function envd(path: string, opts: { method?: 'GET' | 'POST'; body?: string | Buffer; headers?: Record<string, string>; token?: string | null } = {}) {
    const d = deployment();
    const headers: Record<string, string> = {
      'e2b-sandbox-id': sbx.sandboxId,
      'e2b-sandbox-port': '49983',
      ...opts.headers,
    };
    if (opts.token !== null) headers['x-access-token'] = opts.token ?? token;
    return request(`http://127.0.0.1:${d.ports.edgeTraffic}${path}`, { method: opts.method ?? 'POST', headers, body: opts.body });
  }
  const rpc = (method: string, body: string, t?: string | null) =>
    envd(`/${method}`, { body, token: t, headers: { 'content-type': 'application/json', 'connect-protocol-version': '1' } });

  test('missing or wrong access token → unauthenticated, on RPC and files', async () => {
    for (const t of [null, 'wrong-token']) {
      const r = await rpc('process.Process/List', '{}', t);
      assert.equal(r.statusCode, 401);
      assert.equal(((await r.body.json()) as { code: string }).code, 'unauthenticated');
      const f = await envd('/files?path=/etc/hostname', { method: 'GET', token: t });
      assert.equal(f.statusCode, 401);
      await f.body.dump();
    }
    const ok = await rpc('process.Process/List', '{}');
    assert.equal(ok.statusCode, 200);
    await ok.body.dump();
  });

  test('malformed Connect bodies → invalid_argument, not a crash', async () => {
    for (const body of ['{"process":', '[]', '{"process":{"cmd":42}}', '\u0000\u0001garbage']) {
      const r = await rpc('filesystem.Filesystem/Stat', body);
      assert.ok(r.statusCode >= 400 && r.statusCode < 500, `status ${r.statusCode}`);
      const j = (await r.body.json()) as { code: string };
      assert.equal(j.code, 'invalid_argument', `body ${JSON.stringify(body)}`);
    }
    const unknown = await rpc('process.Process/NoSuchMethod', '{}');
    assert.equal(unknown.statusCode, 404);
    await unknown.body.dump();
  });

  test('unknown pids → not_found', async () => {
    const r = await rpc('process.Process/SendSignal', JSON.stringify({ process: { pid: 999999 }, signal: 'SIGNAL_SIGKILL' }));
    assert.equal(r.statusCode, 404);
    assert.equal(((await r.body.json()) as { code: string }).code, 'not_found');
    const i = await rpc('process.Process/SendInput', JSON.stringify({ process: { pid: 999999 }, input: { stdin: 'aGk=' } }));
    assert.equal(((await i.body.json()) as { code: string }).code, 'not_found');
  });

  test('paths cannot leave the sandbox: ../ resolves inside it', async () => {
    const text = await sbx.files.read('/../../../../etc/hostname');
    assert.equal(text.trim(), sbx.sandboxId);
    const nul = await rpc('filesystem.Filesystem/Stat', JSON.stringify({ path: '/etc/\u0000passwd' }));
    assert.equal(((await nul.body.json()) as { code: string }).code, 'invalid_argument');
  });

  test('internal envd routes are not reachable from outside', async () => {
    const r = await envd('/init', { body: '{"accessToken":"mine"}', headers: { 'content-type': 'application/json' } });
    assert.equal(r.statusCode, 404);
    await r.body.dump();
    assert.equal((await sbx.commands.run('echo still-mine')).stdout, 'still-mine\n');
  });

  test('an upload larger than the sandbox disk → 413 JSON, nothing left behind, the sandbox keeps working', async () => {
    const diskBytes = Number((await sbx.commands.run("df -B1 --output=size / | tail -1")).stdout.trim());
    assert.ok(diskBytes > 0);
    const size = diskBytes + 64 * 1024 * 1024;
    const chunk = Buffer.alloc(4 * 1024 * 1024);
    async function* body() {
      for (let sent = 0; sent < size; sent += chunk.length) yield chunk.subarray(0, Math.min(chunk.length, size - sent));
    }
    const r = await envd('/files?path=/tmp/huge', {
      body: body() as unknown as Buffer,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    }).catch((e: Error) => e);
    if (!(r instanceof Error)) {
      assert.equal(r.statusCode, 413);
      assert.equal(((await r.body.json()) as { code: number }).code, 413);
    }
    assert.equal(await sbx.files.exists('/tmp/huge'), false);
    assert.equal((await sbx.commands.run('echo fine')).stdout, 'fine\n');
  });
});
