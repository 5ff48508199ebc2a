// `cove bench --density` checks its flags before it starts anything: a bad --max or --memory-overcommit ends the
// process with exit 1 and `invalid_bench_flags`, and no deployment state is written. Good flags become the
// deployment's environment: the memory overcommit as asked, every other placement cap opened (never a default edited).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { densityDeploymentEnv } from '../src/bench.js';
import { repoRoot } from '../src/paths.js';

const run = promisify(execFile);

describe('cove bench --density: flags', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-density-flags-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function refused(args: string[]): Promise<string> {
    const stateDir = join(dir, 'state');
    // Port offset 300 and a state dir of its own: were anything started, it would not touch another deployment.
    const r = await run(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), 'bench', '--density', '--state-dir', stateDir, '--port-offset', '300', ...args], {
      timeout: 30_000,
    }).then(
      () => assert.fail(`cove bench --density ${args.join(' ')} was accepted`),
      (err: { code?: number; stderr?: string }) => err,
    );
    assert.equal(r.code, 1, r.stderr);
    assert.ok(!existsSync(stateDir), 'nothing was started or written');
    return r.stderr ?? '';
  }

  test('a bad --max or --memory-overcommit is refused before anything starts', async () => {
    assert.match(await refused(['--max', '0']), /^cove: invalid_bench_flags: --max must be a whole number/);
    assert.match(await refused(['--max', '12.5']), /^cove: invalid_bench_flags: --max/);
    assert.match(await refused(['--memory-overcommit', '0.5']), /^cove: invalid_bench_flags: --memory-overcommit/);
    assert.match(await refused(['--memory-overcommit', 'lots']), /^cove: invalid_bench_flags: --memory-overcommit/);
  });

  test('good flags open placement through the environment, the memory overcommit as asked', () => {
    const env = densityDeploymentEnv({ max: '1500', memoryOvercommit: '4' });
    assert.equal(env.COVE_MEMORY_OVERCOMMIT, '4');
    assert.equal(env.COVE_DENSITY_MAX, '1500');
    // Each cap that would stop a 2-core, 24 GiB node below 1,500 base sandboxes (2 vCPU, 1 GiB disk each) is opened.
    assert.ok(Number(env.COVE_CPU_OVERCOMMIT) * 2 >= 1500 * 2);
    assert.ok(Number(env.COVE_MAX_SANDBOXES) >= 1500 && Number(env.COVE_DEFAULT_MAX_SANDBOXES) >= 1500);
    assert.ok(Number(env.COVE_DISK_OVERCOMMIT) * 250 >= 1500);
  });
});
