// Issue 3 proof: the unchanged @e2b/cli 2.19.0 (which bundles SDK 2.49 and uses the v1
// create/connect routes) as a process against the deployment.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { deployment, repoRoot } from './deployment.js';

const e2b = join(repoRoot, 'node_modules/.bin/e2b');

/** Runs the CLI like a user in a script would: no terminal, stdin closed (exec forwards piped stdin). */
function cli(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  const d = deployment();
  return new Promise((resolve, reject) => {
    const child = spawn(e2b, args, {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, NO_UPDATE_NOTIFIER: '1', NO_COLOR: '1', ...d.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve({ stdout, stderr }) : reject(new Error(`e2b ${args.join(' ')} exited ${code}: ${stdout}${stderr}`))));
  });
}

before(() => {
  deployment();
});

test('cli: sandbox create --detach, list, exec, kill', async () => {
  const created = await cli('sandbox', 'create', '--detach', 'base');
  const id = /\b(i[a-z0-9]{20})\b/.exec(created.stdout + created.stderr)?.[1];
  assert.ok(id, `no sandbox id in: ${created.stdout}${created.stderr}`);

  const listed = await cli('sandbox', 'list', '--format', 'json');
  const rows = JSON.parse(listed.stdout) as Array<{ sandboxID?: string; sandboxId?: string }>;
  assert.ok(rows.some((r) => (r.sandboxID ?? r.sandboxId) === id), listed.stdout);

  const out = await cli('sandbox', 'exec', id, 'echo', 'from-cli', '&&', 'hostname');
  assert.match(out.stdout, /from-cli/);

  await cli('sandbox', 'kill', id);
  const after = JSON.parse((await cli('sandbox', 'list', '--format', 'json')).stdout) as Array<{ sandboxID?: string; sandboxId?: string }>;
  assert.ok(!after.some((r) => (r.sandboxID ?? r.sandboxId) === id));
});
