import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';

const TOKEN = 'a-node-token-of-enough-length';
const KEY = 'an-artifact-key-of-enough-length-0123456789';

describe('config', () => {
  it('applies the documented defaults and freezes the result', () => {
    const c = loadConfig({ COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY, COVE_NODE_ID: 'n1' });
    assert.equal(c.nodeId, 'n1');
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.rpcPort, 5008);
    assert.equal(c.proxyPort, 5007);
    assert.equal(c.advertiseHost, '127.0.0.1');
    assert.equal(c.dataDir, '/var/lib/cove');
    assert.match(c.envdBundle, /packages\/envd\/dist\/bundle$/);
    assert.deepEqual({ ...c.warmPool }, { base: 2, 'code-interpreter-v1': 1, desktop: 1 });
    assert.deepEqual({ ...c.defaults }, { vcpu: 2, memoryMb: 512, diskMb: 1024 });
    assert.equal(c.edgeUrl, undefined);
    assert.equal(c.bootConcurrency, Math.max(2, availableParallelism()));
    assert.equal(c.bootQueue, 16 * c.bootConcurrency);
    assert.equal(c.bootWaitMs, 10_000);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.defaults) && Object.isFrozen(c.warmPool));
  });

  it('parses overrides', () => {
    const c = loadConfig({
      COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY,
      COVE_ORCH_HOST: '0.0.0.0',
      COVE_ORCH_ADVERTISE_HOST: '10.0.0.5',
      COVE_ORCH_RPC_PORT: '0',
      COVE_WARM_POOL: 'base=3, python=1',
      COVE_EDGE_URL: 'http://127.0.0.1:3001/',
      COVE_MAX_SANDBOXES: '7',
      COVE_BOOT_CONCURRENCY: '3',
      COVE_BOOT_QUEUE: '0',
      COVE_BOOT_MAX_WAIT_MS: '2500',
    });
    assert.equal(c.bootWaitMs, 2500);
    assert.equal(c.bootConcurrency, 3);
    assert.equal(c.bootQueue, 0, 'no queue: a Create that cannot boot at once is refused');
    assert.equal(c.advertiseHost, '10.0.0.5');
    assert.equal(c.rpcPort, 0);
    assert.deepEqual({ ...c.warmPool }, { base: 3, python: 1 });
    assert.equal(c.edgeUrl, 'http://127.0.0.1:3001');
    assert.equal(c.maxSandboxes, 7);
    assert.deepEqual({ ...loadConfig({ COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY, COVE_WARM_POOL: '' }).warmPool }, {});
  });

  it('says which built-in templates the node builds, and refuses a pool of one it leaves out', () => {
    const base = { COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY };
    assert.deepEqual([...loadConfig(base).builtinTemplates], ['code-interpreter-v1', 'desktop']);
    assert.deepEqual([...loadConfig({ ...base, COVE_BUILTIN_TEMPLATES: 'none', COVE_WARM_POOL: 'base=1' }).builtinTemplates], []);
    assert.deepEqual([...loadConfig({ ...base, COVE_BUILTIN_TEMPLATES: ' desktop ,desktop', COVE_WARM_POOL: 'base=1,desktop=1' }).builtinTemplates], ['desktop']);
    for (const [env, message] of [
      [{ COVE_BUILTIN_TEMPLATES: 'python' }, /COVE_BUILTIN_TEMPLATES: not a built-in template: python/],
      [{ COVE_BUILTIN_TEMPLATES: 'none', COVE_WARM_POOL: 'base=1,desktop=1' }, /COVE_WARM_POOL: desktop is not among COVE_BUILTIN_TEMPLATES/],
    ] as const) {
      assert.throws(() => loadConfig({ ...base, ...env }), (err: unknown) => err instanceof ConfigError && err.issues.some((i) => message.test(i)));
    }
  });

  it('lists every bad field at once', () => {
    assert.throws(
      () => loadConfig({ COVE_ORCH_RPC_PORT: '70000', COVE_WARM_POOL: 'base', COVE_EDGE_URL: 'not a url' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const fields = err.issues.map((i) => i.split(':')[0]);
        assert.deepEqual(fields.sort(), ['COVE_ARTIFACT_KEY', 'COVE_EDGE_URL', 'COVE_NODE_TOKEN', 'COVE_ORCH_RPC_PORT', 'COVE_WARM_POOL']);
        return true;
      },
    );
  });

  it('requires an artifact key of at least 32 characters (no default to forget)', () => {
    for (const key of [undefined, 'short-key']) {
      assert.throws(
        () => loadConfig({ COVE_NODE_TOKEN: TOKEN, ...(key ? { COVE_ARTIFACT_KEY: key } : {}) }),
        (err: unknown) => err instanceof ConfigError && err.issues.some((i) => i.startsWith('COVE_ARTIFACT_KEY')),
      );
    }
    assert.equal(loadConfig({ COVE_NODE_TOKEN: TOKEN, COVE_ARTIFACT_KEY: KEY }).artifactKey, KEY);
  });

  it('main.js exits 2 and names the bad fields when the environment is invalid', async () => {
    const main = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'src', 'main.js');
    const child = spawn(process.execPath, [main], { env: { COVE_ORCH_RPC_PORT: 'x' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 2);
    assert.match(stderr, /COVE_NODE_TOKEN/);
    assert.match(stderr, /COVE_ORCH_RPC_PORT/);
    assert.match(stderr, /COVE_ARTIFACT_KEY/);
  });
});
