// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
// The edge as a process (dist/src/main.js): starts from the environment, reports bad configuration with
// exit code 2, and stops cleanly on SIGTERM.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, watch } from 'node:fs';
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

/** Start the edge process; resolves with its listening record. */
async function startMain(env: Record<string, string>): Promise<{ child: ChildProcess; rec: { apiPort: number; trafficPort: number; trafficProxy: string } }> {
  const child = spawn(process.execPath, [MAIN], { env: { PATH: process.env.PATH ?? '', ...ENV, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  for await (const line of createInterface({ input: child.stdout! })) {
    const rec = JSON.parse(line) as { apiPort?: number; trafficPort: number; trafficProxy: string };
    if (rec.apiPort) {
      child.stdout!.resume();
      return { child, rec: { ...rec, apiPort: rec.apiPort } };
    }
  }
  throw new Error('edge exited before listening');
}

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

  it('takes its HAProxy down on SIGTERM, and ends one a SIGKILLed edge left behind before it binds', async () => {
    const runDir = mkdtempSync(join(tmpdir(), 'cove-edge-main-run-'));
    try {
      const first = await startMain({ COVE_EDGE_RUN_DIR: runDir, COVE_TRAFFIC_PROXY: 'haproxy' });
      assert.equal(first.rec.trafficProxy, 'haproxy');
      const pid = Number(readFileSync(join(runDir, 'haproxy.pid'), 'utf8'));
      first.child.kill('SIGKILL');
      await once(first.child, 'exit');
      assert.ok(existsSync(`/proc/${pid}`), 'HAProxy outlives a SIGKILLed edge');
      // Same port: the new edge must end the old HAProxy, or its own could not bind it.
      const second = await startMain({ COVE_EDGE_RUN_DIR: runDir, COVE_TRAFFIC_PROXY: 'haproxy', COVE_EDGE_TRAFFIC_PORT: String(first.rec.trafficPort) });
      assert.equal(second.rec.trafficProxy, 'haproxy');
      assert.equal(second.rec.trafficPort, first.rec.trafficPort);
      const statOf = (p: number) => (existsSync(`/proc/${p}`) ? readFileSync(`/proc/${p}/stat`, 'utf8').split(' ')[2] : 'gone');
      assert.ok(['gone', 'Z'].includes(statOf(pid)), 'the stale HAProxy was ended');
      const res = await request(`http://127.0.0.1:${second.rec.trafficPort}/`, { headers: { host: 'foo.example.com' } });
      assert.equal(res.statusCode, 400);
      await res.body.dump();
      const pid2 = Number(readFileSync(join(runDir, 'haproxy.pid'), 'utf8'));
      second.child.kill('SIGTERM');
      const [code] = await once(second.child, 'exit');
      assert.equal(code, 0);
      assert.ok(['gone', 'Z'].includes(statOf(pid2)), 'SIGTERM stops the edge\'s HAProxy too');
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
  });

  it('a SIGTERM while it starts HAProxy waits for the start, then stops it (no HAProxy left behind)', async () => {
    const runDir = mkdtempSync(join(tmpdir(), 'cove-edge-main-run-'));
    try {
      // HAProxy's pid file appears while the edge is still starting (it waits for HAProxy to serve): the signal lands
      // then, before the edge has listened.
      const pidFile = join(runDir, 'haproxy.pid');
      const started = new Promise<void>((resolve) => {
        const w = watch(runDir, () => {
          if (existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim()) {
            w.close();
            resolve();
          }
        });
      });
      const child = spawn(process.execPath, [MAIN], { env: { PATH: process.env.PATH ?? '', ...ENV, COVE_EDGE_RUN_DIR: runDir, COVE_TRAFFIC_PROXY: 'haproxy' }, stdio: ['ignore', 'pipe', 'inherit'] });
      child.stdout.resume();
      await started;
      const pid = Number(readFileSync(pidFile, 'utf8'));
      child.kill('SIGTERM');
      const [code, signal] = await once(child, 'exit');
      assert.deepEqual([code, signal], [0, null], 'it stopped itself, not by the signal\'s default action');
      const state = existsSync(`/proc/${pid}`) ? readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] : 'gone';
      assert.ok(['gone', 'Z'].includes(state ?? ''), 'its HAProxy was stopped');
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
  });
});
