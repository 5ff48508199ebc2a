// Issue 3 proof: bad input on every public route gets a 4xx JSON answer, and nothing crashes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment } from './deployment.js';

type Method = 'GET' | 'POST' | 'DELETE' | 'PUT' | 'PATCH';

async function api(method: Method, path: string, opts: { key?: string | null; body?: string; headers?: Record<string, string> } = {}) {
  const d = deployment();
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key !== null) headers['x-api-key'] = opts.key ?? d.env.E2B_API_KEY;
  if (opts.body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const res = await request(`${d.env.E2B_API_URL}${path}`, { method, headers, body: opts.body });
  const text = await res.body.text();
  let json: { code?: number; message?: string } | undefined;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, json, text };
}

function assertJsonError(r: { status: number; json?: { code?: number; message?: string }; text: string }, status: number) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json?.code, status, r.text);
  assert.equal(typeof r.json?.message, 'string', r.text);
}

describe('public API bad input', () => {
  let sbx: Sandbox;
  let otherKey: string;
  before(async () => {
    const d = deployment();
    sbx = await Sandbox.create({ timeoutMs: 120_000 });
    // A second team on the same cluster, to prove teams cannot see each other's sandboxes.
    const state = JSON.parse(readFileSync(`${d.stateDir}/state.json`, 'utf8')) as { clusterId: string };
    const res = await request(`${d.env.E2B_API_URL}/admin/teams`, {
      method: 'POST',
      headers: { 'x-admin-token': d.secrets.adminToken, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `other-${Date.now()}`, clusterId: state.clusterId }),
    });
    const team = (await res.body.json()) as { team: { id: string }; apiKey: { key: string } };
    assert.equal(res.statusCode, 201, JSON.stringify(team));
    otherKey = team.apiKey.key;
  });
  after(async () => {
    await sbx?.kill();
  });

  test('missing or invalid API key → 401 JSON on every route', async () => {
    for (const [m, p] of [
      ['GET', '/sandboxes'],
      ['GET', '/v2/sandboxes'],
      ['POST', '/sandboxes'],
      ['POST', '/v2/sandboxes'],
      ['GET', `/sandboxes/${sbx.sandboxId}`],
      ['DELETE', `/sandboxes/${sbx.sandboxId}`],
      ['POST', `/sandboxes/${sbx.sandboxId}/timeout`],
      ['POST', `/sandboxes/${sbx.sandboxId}/refreshes`],
      ['POST', `/sandboxes/${sbx.sandboxId}/connect`],
      ['POST', `/v2/sandboxes/${sbx.sandboxId}/connect`],
      ['GET', '/templates'],
      ['GET', '/v2/templates'],
      ['GET', '/templates/aliases/base'],
    ] as Array<[Method, string]>) {
      assertJsonError(await api(m, p, { key: null, body: m === 'POST' ? '{}' : undefined }), 401);
      assertJsonError(await api(m, p, { key: 'e2b_' + '0'.repeat(40), body: m === 'POST' ? '{}' : undefined }), 401);
    }
    assert.equal(await sbx.isRunning(), true, 'unauthenticated DELETE must not kill');
  });

  test('bad JSON and wrong types → 400 JSON', async () => {
    assertJsonError(await api('POST', '/v2/sandboxes', { body: '{"templateID": ' }), 400);
    assertJsonError(await api('POST', '/v2/sandboxes', { body: '{"templateID": 42}' }), 400);
    assertJsonError(await api('POST', '/sandboxes', { body: '{"templateID":"base","timeout":"soon"}' }), 400);
    assertJsonError(await api('POST', '/sandboxes', { body: '{"templateID":"base","metadata":{"a":1}}' }), 400);
    assertJsonError(await api('POST', '/sandboxes', { body: '{"templateID":"base","timeout":-5}' }), 400);
    assertJsonError(await api('POST', `/sandboxes/${sbx.sandboxId}/timeout`, { body: '{"timeout":"x"}' }), 400);
    assertJsonError(await api('POST', `/sandboxes/${sbx.sandboxId}/refreshes`, { body: '{"duration":99999}' }), 400);
    assertJsonError(await api('GET', '/v2/sandboxes?limit=0'), 400);
    assertJsonError(await api('GET', '/v2/sandboxes?state=sleeping'), 400);
    assertJsonError(await api('GET', '/v2/sandboxes?nextToken=%%%'), 400);
  });

  test('timeout above the team maximum → 400', async () => {
    assertJsonError(await api('POST', '/v2/sandboxes', { body: JSON.stringify({ templateID: 'base', timeout: 10 * 24 * 3600 }) }), 400);
  });

  test('unknown template → 404 JSON', async () => {
    assertJsonError(await api('POST', '/v2/sandboxes', { body: '{"templateID":"no-such-template"}' }), 404);
    assertJsonError(await api('GET', '/templates/aliases/no-such-template'), 404);
  });

  test("another team's sandbox is invisible: 404 everywhere, and it keeps running", async () => {
    for (const [m, p, body] of [
      ['GET', `/sandboxes/${sbx.sandboxId}`, undefined],
      ['DELETE', `/sandboxes/${sbx.sandboxId}`, undefined],
      ['POST', `/sandboxes/${sbx.sandboxId}/timeout`, '{"timeout":1}'],
      ['POST', `/sandboxes/${sbx.sandboxId}/connect`, '{"timeout":10}'],
      ['POST', `/v2/sandboxes/${sbx.sandboxId}/connect`, '{"timeout":10}'],
    ] as Array<[Method, string, string | undefined]>) {
      assertJsonError(await api(m, p, { key: otherKey, body }), 404);
    }
    const list = await api('GET', '/v2/sandboxes', { key: otherKey });
    assert.equal(list.status, 200);
    assert.ok(!list.text.includes(sbx.sandboxId));
    assert.equal(await sbx.isRunning(), true);
  });

  test('huge bodies → 413 JSON', async () => {
    // Twice the 1 MiB body limit; the server reads and drops the rest, so the client reads the 413 instead of EPIPE.
    const huge = JSON.stringify({ templateID: 'base', metadata: { big: 'x'.repeat(2 * 1024 * 1024) } });
    assertJsonError(await api('POST', '/v2/sandboxes', { body: huge }), 413);
  });

  test('unknown routes → 404 JSON; routes of later work → 501 JSON', async () => {
    assertJsonError(await api('GET', '/no/such/route'), 404);
    assertJsonError(await api('GET', '/nodes'), 501);
  });

  test('pause and resume bad input: wrong types → 400, unknown ids → 404; the sandbox keeps running', async () => {
    assertJsonError(await api('POST', `/sandboxes/${sbx.sandboxId}/pause`, { body: '{"memory":"yes"}' }), 400);
    assertJsonError(await api('POST', `/sandboxes/${sbx.sandboxId}/pause`, { body: '[1,2]' }), 400);
    assertJsonError(await api('POST', `/sandboxes/${sbx.sandboxId}/connect`, { body: '{"timeout":-5}' }), 400);
    assertJsonError(await api('POST', '/sandboxes/inosuchsandbox000000000/pause', { body: '{}' }), 404);
    assertJsonError(await api('POST', '/sandboxes/inosuchsandbox000000000/connect', { body: '{"timeout":30}' }), 404);
    assertJsonError(await api('POST', '/sandboxes/inosuchsandbox000000000/snapshots', { body: '{}' }), 404);
    assertJsonError(await api('DELETE', '/templates/nosuchsnapshot0000000'), 404);
  });

  test('the control plane is still healthy after all of it', async () => {
    const d = deployment();
    const r = await request(`${d.env.E2B_API_URL}/health`);
    assert.ok(r.statusCode < 300);
    await r.body.dump();
    assert.equal(await sbx.isRunning(), true);
  });
});
