// E2B's account routes (GET /teams, /api-keys, /access-tokens) over HTTP against a real control plane: the shapes
// of E2B's spec (Team, TeamAPIKey, CreatedTeamAPIKey, CreatedAccessToken, IdentifierMaskingDetails), that a new
// key or token works at once and a deleted one at once stops, that one team never sees or touches another's, and
// clear JSON errors for missing or bad credentials and bad bodies.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';

const Mask = z.object({ prefix: z.string(), valueLength: z.number().int(), maskedValuePrefix: z.string(), maskedValueSuffix: z.string() }).strict();
const Team = z.object({ teamID: z.string(), name: z.string(), apiKey: z.string(), isDefault: z.boolean() }).strict();
const TeamAPIKey = z
  .object({ id: z.string(), name: z.string(), mask: Mask, createdAt: z.string().datetime(), createdBy: z.null(), lastUsed: z.string().datetime().nullable() })
  .strict();
const CreatedTeamAPIKey = TeamAPIKey.extend({ key: z.string().regex(/^e2b_[0-9a-f]{40}$/) }).strict();
const CreatedAccessToken = z.object({ id: z.string(), name: z.string(), token: z.string().regex(/^sk_e2b_[0-9a-f]{40}$/), mask: Mask, createdAt: z.string().datetime() }).strict();

describe('E2B account routes', () => {
  let cp: RunningControlPlane;
  let key: string;
  let teamId: string;
  let otherKey: string;

  before(async () => {
    cp = await startControlPlane();
    ({ key, teamId } = await setupTeam(cp.url, 'http://127.0.0.1:1', 'cluster-token-0123456789abcdef', { name: 'acme' }));
    const other = await call(cp.url, 'POST', '/admin/teams', { admin: ADMIN_TOKEN, body: { name: 'globex' } });
    otherKey = other.body.apiKey.key;
  });
  after(async () => cp?.close());

  test('GET /teams answers the caller team as E2B does, with the API key it authenticated with', async () => {
    const r = await call(cp.url, 'GET', '/teams', { key });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const teams = z.array(Team).parse(r.body);
    assert.deepEqual(teams, [{ teamID: teamId, name: 'acme', apiKey: key, isDefault: true }]);
  });

  test('API keys: create (works at once), list with masks, rename, delete (stops at once)', async () => {
    const created = await call(cp.url, 'POST', '/api-keys', { key, body: { name: 'ci' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const k = CreatedTeamAPIKey.parse(created.body);
    assert.deepEqual(k.mask, { prefix: 'e2b_', valueLength: 40, maskedValuePrefix: '', maskedValueSuffix: k.key.slice(-4) });
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key: k.key })).status, 200, 'the new key opens the API');

    const listed = await call(cp.url, 'GET', '/api-keys', { key });
    const keys = z.array(TeamAPIKey).parse(listed.body);
    assert.deepEqual(keys.map((x) => x.name).sort(), ['ci', 'default']);
    assert.ok(!JSON.stringify(listed.body).includes(k.key), 'a listing never holds a key');
    assert.ok(keys.find((x) => x.name === 'ci')!.lastUsed, 'lastUsed is recorded');

    assert.equal((await call(cp.url, 'PATCH', `/api-keys/${k.id}`, { key, body: { name: 'ci-renamed' } })).status, 200);
    assert.ok(z.array(TeamAPIKey).parse((await call(cp.url, 'GET', '/api-keys', { key })).body).some((x) => x.name === 'ci-renamed'));

    assert.equal((await call(cp.url, 'DELETE', `/api-keys/${k.id}`, { key })).status, 204);
    const refused = await call(cp.url, 'GET', '/v2/sandboxes', { key: k.key });
    assert.deepEqual([refused.status, refused.body.code], [401, 401]);
    const again = await call(cp.url, 'DELETE', `/api-keys/${k.id}`, { key });
    assert.deepEqual([again.status, again.body.code], [404, 404]);
  });

  test('access tokens: create, use on the account routes (the CLI sends them as Bearer), delete', async () => {
    const created = await call(cp.url, 'POST', '/access-tokens', { key, body: { name: 'laptop' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const t = CreatedAccessToken.parse(created.body);
    assert.equal(t.mask.prefix, 'sk_e2b_');
    const bearer = { authorization: `Bearer ${t.token}` };
    const teams = await call(cp.url, 'GET', '/teams', { headers: bearer });
    assert.equal(teams.status, 200, JSON.stringify(teams.body));
    // Cove keeps only hashes: the key is answered only to a caller who presented it.
    assert.deepEqual(z.array(Team).parse(teams.body), [{ teamID: teamId, name: 'acme', apiKey: '', isDefault: true }]);
    const minted = await call(cp.url, 'POST', '/api-keys', { headers: bearer, body: { name: 'from-token' } });
    assert.equal(minted.status, 201);
    // An access token is an account credential only: it does not run sandboxes.
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { headers: bearer })).status, 401);
    assert.equal((await call(cp.url, 'DELETE', `/access-tokens/${t.id}`, { key })).status, 204);
    const gone = await call(cp.url, 'GET', '/teams', { headers: bearer });
    assert.deepEqual([gone.status, gone.body.message], [401, 'Invalid access token']);
  });

  test("one team never sees or touches another's keys and tokens", async () => {
    const mine = z.array(TeamAPIKey).parse((await call(cp.url, 'GET', '/api-keys', { key })).body);
    const theirs = z.array(TeamAPIKey).parse((await call(cp.url, 'GET', '/api-keys', { key: otherKey })).body);
    assert.ok(!theirs.some((k) => mine.some((m) => m.id === k.id)));
    const target = mine[0]!.id;
    assert.equal((await call(cp.url, 'DELETE', `/api-keys/${target}`, { key: otherKey })).status, 404);
    assert.equal((await call(cp.url, 'PATCH', `/api-keys/${target}`, { key: otherKey, body: { name: 'x' } })).status, 404);
    const token = CreatedAccessToken.parse((await call(cp.url, 'POST', '/access-tokens', { key, body: { name: 'mine' } })).body);
    assert.equal((await call(cp.url, 'DELETE', `/access-tokens/${token.id}`, { key: otherKey })).status, 404);
    assert.equal((await call(cp.url, 'GET', '/teams', { headers: { authorization: `Bearer ${token.token}` } })).status, 200, 'still valid');
  });

  test('missing or bad credentials and bad bodies are clear JSON errors', async () => {
    const cases: Array<[string, string, Parameters<typeof call>[3], number]> = [
      ['GET', '/teams', {}, 401],
      ['GET', '/api-keys', { headers: { authorization: 'Bearer sk_e2b_0000000000000000000000000000000000000000' } }, 401],
      ['GET', '/api-keys', { key: 'e2b_' + '0'.repeat(40) }, 401],
      ['GET', '/teams', { key: 'x'.repeat(10_000) }, 401],
      ['POST', '/api-keys', { key, body: {} }, 400],
      ['POST', '/api-keys', { key, body: { name: '' } }, 400],
      ['POST', '/api-keys', { key, body: { name: 'n'.repeat(500) } }, 400],
      ['POST', '/api-keys', { key, body: { name: 'a', extra: 1 } }, 400],
      ['POST', '/api-keys', { key, raw: '{not json' }, 400],
      ['POST', '/access-tokens', { key, body: { name: 42 } }, 400],
      ['PATCH', '/api-keys/..%2F..%2Fadmin', { key, body: { name: 'x' } }, 400],
      ['DELETE', '/access-tokens/does-not-exist', { key }, 404],
    ];
    for (const [method, path, opts, status] of cases) {
      const r = await call(cp.url, method, path, opts);
      assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, status, `${method} ${path}`);
      assert.equal(typeof r.body.message, 'string');
    }
  });
});
