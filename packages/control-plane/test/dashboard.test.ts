// The dashboard's doors over HTTP against a real control plane: the static files are a fixed set (no path reaches
// the file system), routes without a session answer 401 JSON, a session needs the CSRF header, the cookie is
// HttpOnly/SameSite=Strict and holds no credential the person pasted, a forged or signed-out cookie opens nothing,
// and one team's session never touches another team's keys.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { eventually } from '@cove/test-support/eventually';
import { request } from 'undici';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';

interface Res { status: number; headers: Record<string, string | string[] | undefined>; text: string; json: any }

async function http(base: string, method: string, path: string, opts: { cookie?: string; csrf?: boolean; body?: unknown } = {}): Promise<Res> {
  const headers: Record<string, string> = {};
  if (opts.cookie !== undefined) headers.cookie = opts.cookie;
  if (opts.csrf !== false) headers['x-cove-dashboard'] = '1';
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const r = await request(`${base}${path}`, { method: method as 'GET', headers, body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined });
  const text = await r.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.statusCode, headers: r.headers, text, json };
}

/** Signs in with a credential; the `name=value` pair of the session cookie. */
async function signIn(base: string, token: string): Promise<{ cookie: string; setCookie: string }> {
  const r = await http(base, 'POST', '/dashboard/session', { body: { token } });
  assert.equal(r.status, 201, r.text);
  const setCookie = String(r.headers['set-cookie']);
  return { cookie: setCookie.split(';')[0]!, setCookie };
}

describe('dashboard: static files, session and CSRF', () => {
  let cp: RunningControlPlane;
  let key: string;
  let teamId: string;
  let otherKey: string;

  before(async () => {
    cp = await startControlPlane();
    ({ key, teamId } = await setupTeam(cp.url, 'http://127.0.0.1:1', 'cluster-token-0123456789abcdef', { name: 'acme' }));
    otherKey = (await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'globex' } })).body.apiKey.key;
  });
  after(async () => cp?.close());

  test('the page is served with a CSP that forbids inline script; no other path reaches the file system', async () => {
    const page = await http(cp.url, 'GET', '/dashboard/');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(String(page.headers['content-security-policy']), /script-src 'self';/);
    assert.match(page.text, /<script type="module" src="\/dashboard\/app.js">/);
    const js = await http(cp.url, 'GET', '/dashboard/app.js');
    assert.equal(js.status, 200);
    assert.ok(!/innerHTML|outerHTML|insertAdjacentHTML|document\.write/.test(js.text), 'the app never parses strings as markup');
    for (const p of ['/dashboard/..%2fpackage.json', '/dashboard/%2e%2e/%2e%2e/package.json', '/dashboard/app.js/../../src/main.ts', '/dashboard/index.html', '/dashboard/tsconfig.json']) {
      const r = await http(cp.url, 'GET', p);
      assert.notEqual(r.status, 200, p);
      assert.equal(r.json?.code, r.status, `${p}: JSON error`);
    }
  });

  test('routes without a session answer 401 JSON with a code; a session without the CSRF header is refused', async () => {
    for (const p of ['/dashboard/api/v2/sandboxes', '/dashboard/api/api-keys', '/dashboard/api/cluster', '/dashboard/api/teams']) {
      const r = await http(cp.url, 'GET', p);
      assert.deepEqual([r.status, r.json?.code, r.json?.error_code], [401, 401, 'no_session'], p);
    }
    // An API key is not a session: the dashboard API answers only to the cookie.
    const withKey = await request(`${cp.url}/dashboard/api/api-keys`, { headers: { 'x-api-key': key, 'x-cove-dashboard': '1' } });
    assert.equal(withKey.statusCode, 401);
    await withKey.body.dump();

    const { cookie } = await signIn(cp.url, key);
    const noHeader = await http(cp.url, 'POST', '/dashboard/api/api-keys', { cookie, csrf: false, body: { name: 'csrf' } });
    assert.deepEqual([noHeader.status, noHeader.json?.error_code], [403, 'csrf_header_missing']);
    const noHeaderDelete = await http(cp.url, 'DELETE', '/dashboard/api/api-keys/whatever', { cookie, csrf: false });
    assert.deepEqual([noHeaderDelete.status, noHeaderDelete.json?.error_code], [403, 'csrf_header_missing']);
    // Reads need no header (the browser follows their 307s to the cluster, where a custom header would need a
    // preflight); SameSite=Strict keeps the cookie off cross-site reads and no CORS lets another site read them.
    assert.equal((await http(cp.url, 'GET', '/dashboard/api/api-keys', { cookie, csrf: false })).status, 200);
    const keys = (await http(cp.url, 'GET', '/dashboard/api/api-keys', { cookie })).json as Array<{ name: string }>;
    assert.ok(!keys.some((k) => k.name === 'csrf'), 'the refused request created nothing');
    // Login CSRF: a cross-site form cannot sign the browser into the attacker's team either.
    const loginNoHeader = await http(cp.url, 'POST', '/dashboard/session', { csrf: false, body: { token: otherKey } });
    assert.equal(loginNoHeader.status, 403);
    assert.equal(loginNoHeader.headers['set-cookie'], undefined);
    // No CORS preflight is granted, so no other origin can add the header.
    const pre = await request(`${cp.url}/dashboard/api/api-keys`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-cove-dashboard' } });
    assert.equal(pre.headers['access-control-allow-origin'], undefined);
    await pre.body.dump();
  });

  test('sign-in: bad, oversized and malformed credentials get clear errors; the cookie is HttpOnly, Strict, and not the pasted key', async () => {
    const bad = await http(cp.url, 'POST', '/dashboard/session', { body: { token: `e2b_${randomBytes(20).toString('hex')}` } });
    assert.deepEqual([bad.status, bad.json?.code], [401, 401]);
    const huge = await http(cp.url, 'POST', '/dashboard/session', { body: { token: 'x'.repeat(100_000) } });
    assert.deepEqual([huge.status, huge.json?.code], [400, 400]);
    const extra = await http(cp.url, 'POST', '/dashboard/session', { body: { token: key, teamID: 'other' } });
    assert.equal(extra.status, 400);
    const notJson = await request(`${cp.url}/dashboard/session`, { method: 'POST', headers: { 'x-cove-dashboard': '1', 'content-type': 'application/json' }, body: '{' });
    assert.equal(notJson.statusCode, 400);
    await notJson.body.dump();

    const { cookie, setCookie } = await signIn(cp.url, key);
    assert.match(setCookie, /; HttpOnly/);
    assert.match(setCookie, /; SameSite=Strict/);
    assert.match(setCookie, /; Path=\/dashboard/);
    assert.ok(!setCookie.includes(key), 'the pasted API key is not kept in the browser');
    const teams = await http(cp.url, 'GET', '/dashboard/api/teams', { cookie });
    assert.equal(teams.status, 200);
    assert.equal(teams.json[0].teamID, teamId);
    assert.equal(teams.json[0].apiKey, '', 'no key is answered to a session');
  });

  test('keys through the session: create works on the public API at once, revoke stops it; another team is out of reach', async () => {
    const { cookie } = await signIn(cp.url, key);
    const created = await http(cp.url, 'POST', '/dashboard/api/api-keys', { cookie, body: { name: 'from-dashboard' } });
    assert.equal(created.status, 201, created.text);
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: created.json.key })).status, 200);
    assert.equal((await http(cp.url, 'DELETE', `/dashboard/api/api-keys/${created.json.id}`, { cookie })).status, 204);
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: created.json.key })).status, 401);

    const otherKeys = (await call(cp.url, 'GET', '/api-keys', { key: otherKey })).body as Array<{ id: string }>;
    const steal = await http(cp.url, 'DELETE', `/dashboard/api/api-keys/${otherKeys[0]!.id}`, { cookie });
    assert.equal(steal.status, 404);
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: otherKey })).status, 200, "the other team's key still works");
  });

  test('forged cookies open nothing; sign-out kills a copied cookie at once', async () => {
    const forged = [
      `cove_dashboard=sk_e2b_${randomBytes(20).toString('hex')}`,
      `cove_dashboard=${key}`,
      `cove_dashboard=abc.${key}`,
      `cove_dashboard=${'a'.repeat(5000)}`,
      'cove_dashboard=',
    ];
    for (const cookie of forged) assert.equal((await http(cp.url, 'GET', '/dashboard/api/api-keys', { cookie })).status, 401, cookie.slice(0, 40));

    const { cookie } = await signIn(cp.url, key);
    const copy = cookie;
    assert.equal((await http(cp.url, 'GET', '/dashboard/api/api-keys', { cookie })).status, 200);
    const out = await http(cp.url, 'DELETE', '/dashboard/session', { cookie });
    assert.equal(out.status, 204);
    assert.match(String(out.headers['set-cookie']), /Max-Age=0/);
    const after = await http(cp.url, 'GET', '/dashboard/api/api-keys', { cookie: copy });
    assert.deepEqual([after.status, after.json?.error_code], [401, 'no_session']);
    // Signing one session out leaves the others (another tab, another person) alone.
    const a = await signIn(cp.url, key);
    const b = await signIn(cp.url, otherKey);
    assert.equal((await http(cp.url, 'DELETE', '/dashboard/session', { cookie: a.cookie })).status, 204);
    assert.equal((await http(cp.url, 'GET', '/dashboard/api/api-keys', { cookie: b.cookie })).status, 200, 'the other session lives on');
  });

  test('a session ends by age on the server, whatever the browser keeps', async () => {
    const short = await startControlPlane({ COVE_DASHBOARD_SESSION_TTL_S: '1' });
    try {
      const t = await setupTeam(short.url, 'http://127.0.0.1:1', 'cluster-token-0123456789abcdef', { name: 'brief' });
      const { cookie, setCookie } = await signIn(short.url, t.key);
      assert.match(setCookie, /; Max-Age=1(;|$)/);
      // The browser would drop it now; a copied cookie is kept and replayed until the server refuses it.
      await eventually(async () => ((await http(short.url, 'GET', '/dashboard/api/api-keys', { cookie })).status === 401 ? true : undefined), 10_000, 'the session expired');
      const r = await http(short.url, 'GET', '/dashboard/api/api-keys', { cookie });
      assert.equal(r.json?.error_code, 'no_session');
    } finally {
      await short.close();
    }
    const bad = await startControlPlane({ COVE_DASHBOARD_SESSION_TTL_S: '0' }).then(
      async (x) => { await x.close(); return 'started'; },
      (e: Error) => e.message,
    );
    assert.match(bad, /COVE_DASHBOARD_SESSION_TTL_S/, 'a zero TTL is refused at start');
  });

  test('the cluster view answers the team cluster with health (no report yet: unknown)', async () => {
    const { cookie } = await signIn(cp.url, key);
    const r = await http(cp.url, 'GET', '/dashboard/api/cluster', { cookie });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.health.status, 'unknown');
    assert.deepEqual(r.json.reports, []);
    assert.ok(!('token' in r.json.cluster) && !('endpoint' in r.json.cluster), 'no cluster secret or address reaches the page');
  });
});
