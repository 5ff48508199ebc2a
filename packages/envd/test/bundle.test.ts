import assert from 'node:assert/strict';
import { cp, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Sandbox } from 'e2b';
import { startEnvd, tempDir, type RunningEnvd } from './envd-process.js';

const BUNDLE = fileURLToPath(new URL('../bundle', import.meta.url));
const built = await stat(`${BUNDLE}/envd.cjs`).then(() => true, () => false);

// The orchestrator runs the bundle from a read-only mount with these flags (docs/decisions.md, envd).
export const RECOMMENDED_NODE_FLAGS = ['--max-semi-space-size=1', '--max-old-space-size=128', '--v8-pool-size=1', '--optimize-for-size'];

describe('bundle (npm run bundle -w @cove/envd) is self-contained', { skip: built ? false : 'run `npm run bundle -w @cove/envd` first' }, () => {
  let envd: RunningEnvd;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let sbx: Sandbox;

  before(async () => {
    tmp = await tempDir();
    // A copy outside the repository: nothing may resolve from the workspace's node_modules.
    await cp(BUNDLE, `${tmp.dir}/envd`, { recursive: true });
    envd = await startEnvd({ UV_THREADPOOL_SIZE: '2' }, { entry: `${tmp.dir}/envd/envd.cjs`, nodeFlags: RECOMMENDED_NODE_FLAGS });
    assert.equal((await envd.init({ defaultUser: 'root' })).status, 204);
    sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
  });
  after(async () => {
    await envd?.stop();
    await tmp.cleanup();
  });

  test('commands, PTY (node-pty) and metadata (fs-xattr) work from the bundle', async () => {
    assert.equal((await sbx.commands.run('echo bundled')).stdout, 'bundled\n');
    let out = '';
    const h = await sbx.pty.create({ cols: 100, rows: 33, onData: (d) => void (out += Buffer.from(d).toString()) });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size; exit\n'));
    await h.wait().catch(() => undefined);
    assert.match(out, /33 100/);
    await sbx.files.write(`${tmp.dir}/m.txt`, 'x', { metadata: { k: 'v' } });
    assert.deepEqual((await sbx.files.getInfo(`${tmp.dir}/m.txt`)).metadata, { k: 'v' });
  });

  test('a port it cannot take ends the process with a failure (no half-started envd that answers nothing)', async () => {
    await assert.rejects(
      startEnvd({ ENVD_PORT: String(envd.port) }, { entry: `${tmp.dir}/envd/envd.cjs`, nodeFlags: RECOMMENDED_NODE_FLAGS }),
      /envd exited early \(1\)/,
    );
  });
});
