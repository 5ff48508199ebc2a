// Sealed secrets on the edge (docs/network-policy.md, "Secrets"): `POST /v1/secrets` and `/v1/secrets/delete` on a
// real edge with local cluster storage. Only the cluster token may call them; the object key is built from a
// team id and a sha256 name key the edge checks, so a body cannot name a path outside `secrets/<team>/`; bodies are
// bounded; a delete of an absent secret is not an error.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { CLUSTER_TOKEN, startEdge, type RunningEdge } from './fixtures/edge-harness.js';

const auth = { authorization: `Bearer ${CLUSTER_TOKEN}` };
const key = (): string => randomBytes(32).toString('hex');

describe('edge: sealed secrets in cluster storage', () => {
  let edge: RunningEdge;
  const post = async (path: string, body: unknown, headers: Record<string, string> = auth) => {
    const r = await request(`${edge.apiUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
    return { status: r.statusCode, body: (await r.body.json()) as { message?: string } };
  };
  const objects = (): string => join(edge.storageRoot!, 'objects');

  before(async () => {
    edge = await startEdge();
  });
  after(async () => {
    await edge?.close();
  });

  it('stores and deletes under secrets/<team>/<name key>; deleting an absent one is fine', async () => {
    const nameKey = key();
    assert.equal((await post('/v1/secrets', { teamId: 'team-1', nameKey, sealed: '{"v":1}' })).status, 200);
    const file = join(objects(), 'secrets', 'team-1', nameKey);
    assert.equal(readFileSync(file, 'utf8'), '{"v":1}');
    assert.equal((await post('/v1/secrets', { teamId: 'team-1', nameKey, sealed: '{"v":2}' })).status, 200, 'an update replaces it');
    assert.equal(readFileSync(file, 'utf8'), '{"v":2}');
    assert.equal((await post('/v1/secrets/delete', { teamId: 'team-1', nameKey })).status, 200);
    assert.equal(existsSync(file), false);
    assert.equal((await post('/v1/secrets/delete', { teamId: 'team-1', nameKey })).status, 200);
  });

  it('refuses callers without the cluster token, keys that could leave the prefix, and oversize or extra fields', async () => {
    const nameKey = key();
    assert.equal((await post('/v1/secrets', { teamId: 't', nameKey, sealed: 'x' }, {})).status, 401);
    assert.equal((await post('/v1/secrets', { teamId: 't', nameKey, sealed: 'x' }, { authorization: 'Bearer wrong' })).status, 403);
    for (const body of [
      { teamId: '../etc', nameKey, sealed: 'x' },
      { teamId: 't', nameKey: '../../../../tmp/x', sealed: 'x' },
      { teamId: 't', nameKey: nameKey.toUpperCase(), sealed: 'x' },
      { teamId: 't', nameKey, sealed: '' },
      { teamId: 't', nameKey, sealed: 'x'.repeat(16 * 1024 + 1) },
      { teamId: 't', nameKey, sealed: 'x', path: '/etc/passwd' },
    ]) {
      const r = await post('/v1/secrets', body);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(r.body.message ?? '', /invalid body/);
    }
    assert.equal((await post('/v1/secrets', 'x'.repeat(70 * 1024))).status, 413);
    assert.equal(existsSync(join(objects(), 'secrets', 't')), false, 'nothing was stored');
  });
});
