// The template-related settings of the orchestrator's config: storage, layer cache, registry, user-template pools.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';

const TOKEN = 'a-node-token-of-enough-length';
const KEY = 'an-artifact-key-of-enough-length-0123456789';

describe('config: templates', () => {
  it('defaults storage to <dataDir>/storage and the layer cache to 10 GiB', () => {
    const c = loadConfig({ COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY, COVE_DATA_DIR: '/srv/cove' });
    assert.deepEqual({ ...c.storage }, { url: 'file:///srv/cove/storage', accessKeyId: undefined, secretAccessKey: undefined });
    assert.equal(c.layerCacheBytes, 10240 * 1024 * 1024);
    assert.deepEqual({ ...c.registry }, { url: undefined, username: undefined, password: undefined });
    assert.deepEqual({ ...c.userTemplates }, { warmPerBuild: 1, warmBuilds: 4, readyTimeoutMs: 30_000 });
    assert.equal(c.maxBuilds, 2);
  });

  it('bounds concurrent builds per node', () => {
    assert.equal(loadConfig({ COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY, COVE_MAX_BUILDS: '4' }).maxBuilds, 4);
    assert.throws(() => loadConfig({ COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY, COVE_MAX_BUILDS: '0' }), (err: unknown) => err instanceof ConfigError && /COVE_MAX_BUILDS/.test(err.message));
  });

  it('parses overrides', () => {
    const c = loadConfig({
      COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY,
      COVE_STORAGE_URL: 's3://bucket/prefix?endpoint=http://127.0.0.1:9000&pathStyle=true',
      COVE_STORAGE_ACCESS_KEY_ID: 'AK',
      COVE_STORAGE_SECRET_ACCESS_KEY: 'SK',
      COVE_LAYER_CACHE_MB: '100',
      COVE_REGISTRY_URL: 'http://127.0.0.1:5000/',
      COVE_REGISTRY_USERNAME: 'cove',
      COVE_REGISTRY_PASSWORD: 'pw',
      COVE_TEMPLATE_WARM_POOL_SIZE: '0',
      COVE_TEMPLATE_WARM_POOL_BUILDS: '2',
      COVE_TEMPLATE_READY_TIMEOUT_MS: '5000',
    });
    assert.equal(c.storage.accessKeyId, 'AK');
    assert.equal(c.layerCacheBytes, 100 * 1024 * 1024);
    assert.deepEqual({ ...c.registry }, { url: 'http://127.0.0.1:5000', username: 'cove', password: 'pw' });
    assert.deepEqual({ ...c.userTemplates }, { warmPerBuild: 0, warmBuilds: 2, readyTimeoutMs: 5000 });
  });

  it('names every bad template setting', () => {
    assert.throws(
      () =>
        loadConfig({
          COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY,
          COVE_STORAGE_URL: 'ftp://nowhere',
          COVE_STORAGE_ACCESS_KEY_ID: 'AK',
          COVE_LAYER_CACHE_MB: '0',
          COVE_REGISTRY_USERNAME: 'u',
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const fields = err.issues.map((i) => i.split(':')[0]).sort();
        assert.deepEqual(fields, ['COVE_LAYER_CACHE_MB', 'COVE_REGISTRY_USERNAME', 'COVE_STORAGE_ACCESS_KEY_ID']);
        return true;
      },
    );
    assert.throws(() => loadConfig({ COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY, COVE_STORAGE_URL: 'ftp://nowhere' }), /COVE_STORAGE_URL: .*unsupported scheme/);
  });
});
