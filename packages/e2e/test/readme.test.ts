// The README's SDK snippets are what a new user pastes first: run each as written (only the env file's path is
// the e2e deployment's), in a fresh directory outside the checkout for the own-project one.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { deployment, repoRoot } from './deployment.js';

const run = promisify(execFile);

async function snippet(name: string): Promise<string> {
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
  const m = new RegExp(`<!-- readme-snippet: ${name} [^>]*-->\\n\`\`\`sh\\n([\\s\\S]*?)\`\`\``).exec(readme);
  assert.ok(m, `README has the ${name} snippet`);
  return m[1]!;
}

describe('the README snippets work as written', () => {
  let envFile: string;
  let dir: string;
  before(async () => {
    envFile = join(deployment().stateDir, 'env');
    dir = await mkdtemp(join(tmpdir(), 'cove-readme-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // Without the checkout's environment: only PATH and HOME, as in a new shell.
  const cleanEnv = () => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false' });

  test('own project: npm i e2b, source the env, run a sandbox', async () => {
    const script = (await snippet('own-project')).replace('/path/to/cove/.cove/env', envFile);
    const { stdout } = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, env: cleanEnv(), timeout: 180_000 });
    assert.match(stdout, /Linux \S+ .*GNU\/Linux/);
  });

  test('from the checkout: node -e and the E2B CLI', async () => {
    const script = (await snippet('checkout')).replace('source .cove/env', `source ${envFile}`);
    const { stdout } = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: repoRoot, env: cleanEnv(), timeout: 180_000 });
    assert.match(stdout, /Linux \S+ .*GNU\/Linux/);
  });
});
