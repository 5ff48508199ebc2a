// The upgrade path of the built-in code-interpreter template (issue 17): a second `cove up` (the CLI as a
// process) on a running deployment whose store predates the template gives it the template, restarts nothing
// and leaves a running sandbox exactly as it was.

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CODE_INTERPRETER_TEMPLATE_ID as CI } from '@cove/contracts/sandbox';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment, E2E_PORT_OFFSET, repoRoot, type Deployment } from './deployment.js';

let d: Deployment;
before(() => {
  d = deployment();
});

function coveUp(): Promise<{ code: number | null; out: string }> {
  const args = ['up', '--state-dir', d.stateDir, '--port-offset', String(E2E_PORT_OFFSET), '--nodes', String(d.nodes.length), '--code-interpreter-wait', '0'];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, out }));
  });
}

async function alias(): Promise<{ status: number; body: unknown }> {
  const res = await request(`${d.env.E2B_API_URL}/templates/aliases/${CI}`, { headers: { 'x-api-key': d.env.E2B_API_KEY } });
  return { status: res.statusCode, body: await res.body.json() };
}

const pids = () => Object.fromEntries(readdirSync(join(d.stateDir, 'run')).filter((f) => f.endsWith('.pid')).map((f) => [f, JSON.parse(readFileSync(join(d.stateDir, 'run', f), 'utf8')).pid as number]));

test(`a second cove up on a running deployment from before ${CI} gains it; nothing restarts, a running sandbox is untouched`, { timeout: 120_000 }, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 });
  try {
    await sbx.commands.run('echo before > /home/user/mark && sleep 600 >/dev/null 2>&1 &');
    const before = pids();
    // The store as a deployment from before the template has it (the control plane keeps no copy in memory).
    const db = new Database(join(d.stateDir, 'data', 'control-plane.db'));
    try {
      db.pragma('busy_timeout = 5000');
      db.prepare('delete from templates where template_id = ?').run(CI);
    } finally {
      db.close();
    }
    assert.equal((await alias()).status, 404, 'the deployment no longer offers it');

    const up = await coveUp();
    assert.equal(up.code, 0, up.out);
    assert.doesNotMatch(up.out, /: starting$/m, 'nothing was started again');
    assert.match(up.out, /control-plane: already running/);

    assert.deepEqual((await alias()).body, { templateID: CI, public: true });
    assert.deepEqual(pids(), before, 'every component runs on as the same process');
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running');
    assert.equal((await sbx.commands.run('cat /home/user/mark && pgrep -x sleep >/dev/null && echo still-sleeping')).stdout, 'before\nstill-sleeping\n');
  } finally {
    await sbx.kill();
  }
});
