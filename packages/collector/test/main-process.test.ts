// The collector as `cove up` runs it: a process configured only by its environment. Bad configuration exits 2
// with the offending variable named; SIGTERM closes cleanly and the data is there for the next start.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { call, otlpLogs, removeDir, TOKEN } from './fixtures/harness.js';
import { freePort } from '@cove/test-support/free-port';
import { pollUntil } from '@cove/test-support/eventually';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

function run(env: Record<string, string>) {
  const child = spawn(process.execPath, [MAIN], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, exited, output: () => out };
}

test('bad configuration exits 2 and names the variable', async () => {
  for (const [env, name] of [
    [{ COVE_DATA_DIR: '/tmp/x' }, 'COVE_COLLECTOR_TOKEN'],
    [{ COVE_DATA_DIR: '/tmp/x', COVE_COLLECTOR_TOKEN: 'short' }, 'COVE_COLLECTOR_TOKEN'],
    [{ COVE_DATA_DIR: '/tmp/x', COVE_COLLECTOR_TOKEN: TOKEN, COVE_CONTROL_PLANE_URL: 'http://127.0.0.1:3000' }, 'COVE_CONTROL_PLANE_URL'],
    [{ COVE_DATA_DIR: '/tmp/x', COVE_COLLECTOR_TOKEN: TOKEN, COVE_LOG_RETENTION_BYTES: '-5' }, 'COVE_LOG_RETENTION_BYTES'],
  ] as const) {
    const p = run(env);
    assert.equal(await p.exited, 2, p.output());
    assert.match(p.output(), new RegExp(name));
  }
});

test('runs from its environment, stops on SIGTERM, keeps its data', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-collector-main-'));
  const port = await freePort();
  const env = { COVE_DATA_DIR: dataDir, COVE_COLLECTOR_TOKEN: TOKEN, COVE_COLLECTOR_PORT: String(port), COVE_LOG_LEVEL: 'info' };
  const url = `http://127.0.0.1:${port}`;
  const waitHealthy = async (p: ReturnType<typeof run>) => {
    const healthy = () => call(`${url}/health`, { token: null }).then((r) => r.status === 200, () => false);
    if (!(await pollUntil(healthy, 15_000))) throw new Error(`collector not healthy: ${p.output()}`);
  };
  try {
    const p = run(env);
    await waitHealthy(p);
    assert.equal((await call(`${url}/v1/logs`, { body: otlpLogs([{ tsMs: Date.now(), message: 'from the process' }]) })).status, 200);
    p.child.kill('SIGTERM');
    assert.equal(await p.exited, 0, p.output());
    assert.ok(!p.output().includes(TOKEN), 'the token is never logged');
    assert.ok(!p.output().includes('from the process'), 'record content is never logged');
    const p2 = run(env);
    await waitHealthy(p2);
    const r = await call(`${url}/v1/sandboxes/sbx-1/logs?teamID=team-a`);
    assert.deepEqual(r.json.logEntries.map((e: { message: string }) => e.message), ['from the process']);
    p2.child.kill('SIGTERM');
    assert.equal(await p2.exited, 0);
  } finally {
    removeDir(dataDir);
  }
});
