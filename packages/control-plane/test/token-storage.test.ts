// Secrets the control plane only compares are kept as hashes (docs/decisions.md, "Tokens at rest"): the admin
// token may be configured as its sha256 alone, and then the hash itself is no credential; API keys never reach the
// store in clear. Real HTTP into a real control plane on SQLite (the database file is read back byte for byte).

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { tokenHash } from '@cove/auth-tokens';
import { ConfigError, loadConfig } from '../src/config.js';
import { call, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';

const TOKEN = 'only-the-operator-knows-this-0123';

describe('tokens the control plane only compares are stored hashed', () => {
  let cp: RunningControlPlane;
  before(async () => {
    cp = await startControlPlane({ COVE_ADMIN_TOKEN_SHA256: tokenHash(TOKEN).toUpperCase() });
  });
  after(async () => {
    await cp.close();
  });

  test('the admin token configured as its sha256: the token opens the admin API, its hash does not', async () => {
    assert.equal(cp.config.adminTokenHash, tokenHash(TOKEN));
    assert.ok(!JSON.stringify(cp.config).includes(TOKEN), 'the configuration holds no clear admin token');
    assert.equal((await call(cp.url, 'GET', '/admin/teams', { admin: TOKEN })).status, 200);
    for (const t of [tokenHash(TOKEN), tokenHash(TOKEN).toUpperCase(), `${TOKEN}x`, TOKEN.slice(0, -1), '']) {
      const r = await call(cp.url, 'GET', '/admin/teams', { admin: t });
      assert.deepEqual([r.status, r.body.code], [401, 401], `token ${JSON.stringify(t)}`);
    }
    assert.equal((await call(cp.url, 'GET', '/admin/teams')).status, 401);
  });

  test('a minted API key is nowhere in the database files; it still authenticates', async () => {
    const t = await call(cp.url, 'POST', '/admin/teams', { admin: TOKEN, body: { name: 'hashed' } });
    assert.equal(t.status, 201);
    const key: string = t.body.apiKey.key;
    assert.equal((await call(cp.url, 'GET', '/v2/sandboxes', { key })).status !== 401, true, 'the key authenticates (its team has no cluster yet)');
    const files = readdirSync(cp.dir).filter((f) => f.startsWith('control-plane.db'));
    assert.ok(files.length > 0);
    for (const f of files) {
      const bytes = readFileSync(join(cp.dir, f));
      assert.equal(bytes.includes(key), false, `${f} holds the clear API key`);
      assert.equal(bytes.includes(TOKEN), false, `${f} holds the admin token`);
    }
  });

  test('exactly one of COVE_ADMIN_TOKEN and COVE_ADMIN_TOKEN_SHA256; a malformed hash is refused', () => {
    const base = { COVE_DATA_DIR: cp.dir };
    assert.throws(() => loadConfig(base), (e: unknown) => e instanceof ConfigError && /exactly one of COVE_ADMIN_TOKEN/.test(e.message));
    assert.throws(() => loadConfig({ ...base, COVE_ADMIN_TOKEN: TOKEN, COVE_ADMIN_TOKEN_SHA256: tokenHash(TOKEN) }), ConfigError);
    assert.throws(() => loadConfig({ ...base, COVE_ADMIN_TOKEN_SHA256: 'abc' }), /64 hex digits/);
    assert.equal(loadConfig({ ...base, COVE_ADMIN_TOKEN: TOKEN }).adminTokenHash, tokenHash(TOKEN));
  });
});
