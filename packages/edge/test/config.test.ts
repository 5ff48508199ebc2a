import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../src/index.js';

const base = {
    COVE_CLUSTER_TOKEN: 'c'.repeat(20),
    COVE_NODE_TOKEN: 'n'.repeat(20),
    COVE_SANDBOX_DOMAIN: 'cove.localhost',
    COVE_UPLOAD_SECRET: 'u'.repeat(32),
  };

describe('edge config', () => {
  it('applies the single-host defaults', () => {
    const c = loadConfig(base);
    assert.equal(c.apiPort, 3001);
    assert.equal(c.trafficPort, 3002);
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.redisUrl, undefined);
    assert.match(c.edgeId, /^edge-/);
    assert.ok(Object.isFrozen(c));
  });

  it('lists every bad field at once and refuses E2B domains', () => {
    assert.throws(
      () => loadConfig({ COVE_SANDBOX_DOMAIN: 'e2b.app', COVE_EDGE_API_PORT: '70000', COVE_EDGE_REDIS_URL: 'http://x' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const fields = err.issues.map((i) => i.split(':')[0]);
        for (const f of ['COVE_CLUSTER_TOKEN', 'COVE_NODE_TOKEN', 'COVE_SANDBOX_DOMAIN', 'COVE_EDGE_API_PORT', 'COVE_EDGE_REDIS_URL']) {
          assert.ok(fields.includes(f), f);
        }
        return true;
      },
    );
    assert.throws(() => loadConfig({ ...base, COVE_SANDBOX_DOMAIN: 'sandbox.e2b.dev' }), ConfigError);
    assert.equal(loadConfig({ ...base, COVE_EDGE_REDIS_URL: '/run/redis.sock' }).redisUrl, '/run/redis.sock');
  });
});

describe('edge listen', () => {
  it('fails with EADDRINUSE and releases the port it already had', async () => {
    const { startEdge } = await import('./fixtures/edge-harness.js');
    const first = await startEdge();
    try {
      await assert.rejects(startEdge({ COVE_EDGE_TRAFFIC_PORT: String(first.trafficPort) }), { code: 'EADDRINUSE' });
    } finally {
      await first.close();
    }
  });
});
