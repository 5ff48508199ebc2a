import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../src/index.js';

const base = {
    COVE_CLUSTER_TOKEN: 'c'.repeat(20),
    COVE_NODE_CREDENTIAL_KEY: 'n'.repeat(32),
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
    assert.equal(c.trafficProxy, 'haproxy');
    assert.equal(loadConfig({ ...base, COVE_TRAFFIC_PROXY: 'node' }).trafficProxy, 'node');
    assert.throws(() => loadConfig({ ...base, COVE_TRAFFIC_PROXY: 'nginx' }), ConfigError);
  });

  it('lists every bad field at once and refuses E2B domains', () => {
    assert.throws(
      () => loadConfig({ COVE_SANDBOX_DOMAIN: 'e2b.app', COVE_EDGE_API_PORT: '70000', COVE_EDGE_REDIS_URL: 'http://x' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const fields = err.issues.map((i) => i.split(':')[0]);
        for (const f of ['COVE_CLUSTER_TOKEN', 'COVE_NODE_CREDENTIAL_KEY', 'COVE_SANDBOX_DOMAIN', 'COVE_EDGE_API_PORT', 'COVE_EDGE_REDIS_URL']) {
          assert.ok(fields.includes(f), f);
        }
        return true;
      },
    );
    assert.throws(() => loadConfig({ ...base, COVE_SANDBOX_DOMAIN: 'sandbox.e2b.dev' }), ConfigError);
    assert.equal(loadConfig({ ...base, COVE_EDGE_REDIS_URL: '/run/redis.sock' }).redisUrl, '/run/redis.sock');
  });

  it('refuses the shared COVE_NODE_TOKEN of older releases, naming its replacement', () => {
    assert.throws(
      () => loadConfig({ ...base, COVE_NODE_TOKEN: 'n'.repeat(20) }),
      (err: unknown) => err instanceof ConfigError && err.issues.some((i) => /^COVE_NODE_TOKEN: .*COVE_NODE_CREDENTIAL_KEY/.test(i)),
    );
  });
});

describe('edge control plane URL', () => {
  const issues = (url: string): string => {
    try {
      loadConfig({ ...base, COVE_CONTROL_PLANE_URL: url });
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.issues.join('\n');
    }
    assert.fail(`expected ${url} to be refused`);
  };

  it('is optional: without it auto-resume is off', () => {
    assert.equal(loadConfig(base).controlPlaneUrl, undefined);
  });

  it('takes an http(s) URL and drops trailing slashes', () => {
    assert.equal(loadConfig({ ...base, COVE_CONTROL_PLANE_URL: 'http://127.0.0.1:3000/' }).controlPlaneUrl, 'http://127.0.0.1:3000');
    assert.equal(loadConfig({ ...base, COVE_CONTROL_PLANE_URL: 'https://cp.example/api//' }).controlPlaneUrl, 'https://cp.example/api');
  });

  it('refuses other schemes, queries, fragments and credentials', () => {
    assert.match(issues('not a url'), /^COVE_CONTROL_PLANE_URL: /m);
    assert.match(issues('ftp://cp.example'), /^COVE_CONTROL_PLANE_URL: must be an http or https URL/m);
    assert.match(issues('http://cp.example/?x=1'), /^COVE_CONTROL_PLANE_URL: must not have a query, fragment or credentials/m);
    assert.match(issues('http://cp.example/#top'), /^COVE_CONTROL_PLANE_URL: must not have a query, fragment or credentials/m);
    assert.match(issues('http://user:pw@cp.example'), /^COVE_CONTROL_PLANE_URL: must not have a query, fragment or credentials/m);
    assert.match(issues('http://:pw@cp.example'), /^COVE_CONTROL_PLANE_URL: must not have a query, fragment or credentials/m);
  });
});

describe('edge storage config', () => {
  const noSecret = { COVE_CLUSTER_TOKEN: 'c'.repeat(20), COVE_NODE_CREDENTIAL_KEY: 'n'.repeat(32), COVE_SANDBOX_DOMAIN: 'cove.localhost' };
  const issuesOf = (env: Record<string, string>): string[] => {
    try {
      loadConfig(env);
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.issues;
    }
    assert.fail('expected a ConfigError');
  };

  it('defaults to local storage under /var/lib/cove/storage, 5 GiB uploads, a derived public URL', () => {
    const c = loadConfig(base);
    assert.deepEqual(c.storage.storage, { driver: 'local', root: '/var/lib/cove/storage' });
    assert.equal(c.storage.uploadSecret, 'u'.repeat(32));
    assert.equal(c.storage.uploadMaxBytes, 5 * 1024 ** 3);
    assert.equal(c.storage.publicUrl, undefined);
    assert.equal(loadConfig({ ...base, COVE_EDGE_PUBLIC_URL: 'https://edge.example:3001/' }).storage.publicUrl, 'https://edge.example:3001');
    assert.equal(loadConfig({ ...base, COVE_UPLOAD_MAX_BYTES: '1048576' }).storage.uploadMaxBytes, 1048576);
  });

  it('requires a 32-character upload secret with either driver (S3 uploads are relayed and bounded too)', () => {
    assert.match(issuesOf(noSecret).join('\n'), /^COVE_UPLOAD_SECRET: required/m);
    assert.match(issuesOf({ ...noSecret, COVE_UPLOAD_SECRET: 'short' }).join('\n'), /^COVE_UPLOAD_SECRET: must be at least 32 characters/m);
    const s3Env = {
      ...noSecret,
      COVE_STORAGE_URL: 's3://cove-bucket/prefix?endpoint=http://127.0.0.1:9000&pathStyle=true',
      COVE_STORAGE_ACCESS_KEY_ID: 'AKIA0000',
      COVE_STORAGE_SECRET_ACCESS_KEY: 'secret0000',
    };
    assert.match(issuesOf(s3Env).join('\n'), /^COVE_UPLOAD_SECRET: required/m);
    const s3 = loadConfig({ ...s3Env, COVE_UPLOAD_SECRET: 'u'.repeat(32) });
    assert.equal(s3.storage.storage.driver, 's3');
    assert.deepEqual(s3.storage.storage.driver === 's3' && s3.storage.storage.credentials, { accessKeyId: 'AKIA0000', secretAccessKey: 'secret0000' });
    assert.equal(s3.storage.uploadSecret, 'u'.repeat(32));
  });

  it('lists storage problems with the other bad fields', () => {
    const issues = issuesOf({
      ...base,
      COVE_NODE_CREDENTIAL_KEY: 'short',
      COVE_STORAGE_URL: 's3://cove-bucket/p?bogus=1',
      COVE_STORAGE_ACCESS_KEY_ID: 'only-the-id',
      COVE_EDGE_PUBLIC_URL: 'ftp://edge.example',
      COVE_UPLOAD_MAX_BYTES: '0',
    });
    const fields = issues.map((i) => i.split(':')[0]);
    for (const f of ['COVE_NODE_CREDENTIAL_KEY', 'COVE_STORAGE_URL', 'COVE_EDGE_PUBLIC_URL', 'COVE_UPLOAD_MAX_BYTES']) assert.ok(fields.includes(f), `${f} in ${issues.join('; ')}`);
    assert.match(issues.join('\n'), /COVE_STORAGE_URL: unknown parameter bogus/);
    assert.match(issuesOf({ ...base, COVE_STORAGE_URL: 'http://x/y' }).join('\n'), /COVE_STORAGE_URL: unsupported scheme http:/);
    assert.match(issuesOf({ ...base, COVE_STORAGE_ACCESS_KEY_ID: 'a', COVE_STORAGE_SECRET_ACCESS_KEY: 'b' }).join('\n'), /COVE_STORAGE_ACCESS_KEY_ID: only meaningful with an s3/);
    assert.match(issuesOf({ ...base, COVE_EDGE_PUBLIC_URL: 'https://edge.example/?x=1' }).join('\n'), /COVE_EDGE_PUBLIC_URL: must not have a query/);
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

describe('edge outbound-only control link', () => {
  it('is off by default, and on only with a control plane URL it may dial: https, or http on loopback', () => {
    assert.equal(loadConfig(base).controlLinkOutbound, false);
    assert.equal(loadConfig({ ...base, COVE_CONTROL_LINK_OUTBOUND: 'on', COVE_CONTROL_PLANE_URL: 'https://cp.vendor.example' }).controlLinkOutbound, true);
    assert.equal(loadConfig({ ...base, COVE_CONTROL_LINK_OUTBOUND: 'on', COVE_CONTROL_PLANE_URL: 'http://127.0.0.1:3000' }).controlLinkOutbound, true);
    for (const env of [{ COVE_CONTROL_LINK_OUTBOUND: 'on' }, { COVE_CONTROL_LINK_OUTBOUND: 'on', COVE_CONTROL_PLANE_URL: 'http://cp.vendor.example' }]) {
      assert.throws(
        () => loadConfig({ ...base, ...env }),
        (err: unknown) => err instanceof ConfigError && err.issues.some((i) => /^COVE_CONTROL_LINK_OUTBOUND: .*https:\/\//.test(i)),
      );
    }
    assert.throws(() => loadConfig({ ...base, COVE_CONTROL_LINK_OUTBOUND: 'yes' }), ConfigError);
  });
});
