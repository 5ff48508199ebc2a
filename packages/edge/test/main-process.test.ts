// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
// The edge as a process (dist/src/main.js): starts from the environment, reports bad configuration with
// exit code 2, and stops cleanly on SIGTERM.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { request } from 'undici';

const MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'main.js');
const ENV = {
  COVE_EDGE_API_PORT: '0',
  COVE_EDGE_TRAFFIC_PORT: '0',
  COVE_CLUSTER_TOKEN: 'cluster-token-for-main-test',
  COVE_NODE_CREDENTIAL_KEY: 'node-credential-key-for-main-test-0123',
  COVE_SANDBOX_DOMAIN: 'cove.test',
  COVE_STORAGE_URL: pathToFileURL(join(tmpdir(), 'cove-edge-main-test-storage')).href,
  COVE_UPLOAD_SECRET: 'upload-secret-for-main-test-0123456789',
};

describe('edge process', () => {
  it('exits with code 2 listing the bad fields', async () => {
    const child = spawn(process.execPath, [MAIN], { env: { PATH: process.env.PATH ?? '', COVE_SANDBOX_DOMAIN: 'e2b.dev' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += String(c)));
    const [code] = await once(child, 'exit');
    assert.equal(code, 2);
    assert.match(out, /COVE_CLUSTER_TOKEN/);
    assert.match(out, /COVE_SANDBOX_DOMAIN/);
  });

  it('serves, then stops on SIGTERM with exit code 0', async () => {
    const child = spawn(process.execPath, [MAIN], { env: { PATH: process.env.PATH ?? '', ...ENV }, stdio: ['ignore', 'pipe', 'inherit'] });
    let apiPort = 0;
    for await (const line of createInterface({ input: child.stdout })) {
      const rec = JSON.parse(line) as { apiPort?: number };
      if (rec.apiPort) {
        apiPort = rec.apiPort;
        break;
      }
    }
    child.stdout.resume();
    const health = await request(`http://127.0.0.1:${apiPort}/health`);
    assert.equal(health.statusCode, 503); // no node yet
    assert.deepEqual(await health.body.json(), { status: 'unhealthy' });
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    assert.equal(code, 0);
  });
});
