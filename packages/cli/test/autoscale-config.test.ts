// `cove up --autoscale` checks its configuration before it starts anything: out-of-range flags or env (min > max,
// zero nodes, more nodes than one machine holds, bad fractions, non-numbers) end the process with exit 1 and
// `invalid_autoscaler_config` naming every problem by its flag, and the state dir is not even created. Good
// settings become the policy's configuration (seconds → milliseconds, the nodes' overcommit).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { autoscaleConfigOf } from '../src/autoscale.js';
import { repoRoot } from '../src/paths.js';

const run = promisify(execFile);

describe('cove up --autoscale: configuration', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-autoscale-config-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function refused(args: string[], env: Record<string, string> = {}): Promise<string> {
    const stateDir = join(dir, 'state');
    // Port offset 300 and a state dir of its own: were anything started, it would not touch another deployment.
    const r = await run(process.execPath, [join(repoRoot, 'packages/cli/dist/src/main.js'), 'up', '--autoscale', '--state-dir', stateDir, '--port-offset', '300', ...args], {
      env: { ...process.env, ...env },
      timeout: 30_000,
    }).then(
      () => assert.fail(`cove up ${args.join(' ')} was accepted`),
      (err: { code?: number; stderr?: string }) => err,
    );
    assert.equal(r.code, 1, r.stderr);
    assert.ok(!existsSync(stateDir), 'nothing was started or written');
    return r.stderr ?? '';
  }

  test('out-of-range flags and env are refused before anything starts, every problem named by its flag', async () => {
    assert.match(await refused(['--min-nodes', '3', '--max-nodes', '2']), /^cove: invalid_autoscaler_config: .*--min-nodes: must not exceed maxNodes \(3 > 2\)/);
    const zero = await refused(['--min-nodes', '0', '--max-nodes', '0']);
    assert.match(zero, /--min-nodes: must be at least 1: a cluster with zero nodes/);
    assert.match(zero, /--max-nodes: must be at least 1/);
    assert.match(await refused(['--max-nodes', '5']), /--max-nodes: the local provider runs at most 4 nodes on one machine/);
    const many = await refused(['--target-free', '1.5', '--scale-in-cooldown', 'soon', '--autoscale-interval', '0']);
    assert.match(many, /--target-free: .*1/);
    assert.match(many, /--scale-in-cooldown: "soon" is not a number/);
    assert.match(many, /--autoscale-interval: must be between 0.1 and 3600 seconds/);
    assert.match(await refused(['--target-free', '0.6', '--scale-in-free', '0.5']), /--scale-in-free: must be above targetFreeFraction \(0.6\)/);
    // The same limits through the environment.
    assert.match(await refused([], { COVE_AUTOSCALE_MIN_NODES: '0' }), /--min-nodes: must be at least 1/);
    assert.match(await refused([], { COVE_AUTOSCALE_MAX_NODES: '2', COVE_AUTOSCALE_MIN_NODES: '4' }), /--min-nodes: must not exceed maxNodes \(4 > 2\)/);
    assert.match(await refused(['--cpu-overcommit', '0']), /--cpu-overcommit/);
  });

  test('good settings become the policy configuration', () => {
    const a = autoscaleConfigOf({ minNodes: '1', maxNodes: '3', targetFree: '0.25', scaleInFree: '0.6', scaleOutCooldown: '5', scaleInCooldown: '1.5', cpuOvercommit: '4', autoscaleInterval: '0.5', drainTimeout: '120' });
    assert.deepEqual(a, {
      config: { minNodes: 1, maxNodes: 3, targetFreeFraction: 0.25, scaleInFreeFraction: 0.6, minWarmPoolFraction: 0, scaleOutCooldownMs: 5000, scaleInCooldownMs: 1500, cpuOvercommit: 4 },
      intervalMs: 500,
      drainTimeoutMs: 120_000,
    });
    const defaults = autoscaleConfigOf({});
    assert.equal(defaults.config.minNodes, 1);
    assert.equal(defaults.config.maxNodes, 4);
    assert.equal(defaults.intervalMs, 10_000);
  });
});
