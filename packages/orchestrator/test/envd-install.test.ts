// The envd install slots mount (envd-install.ts): a read-only copy of the bundle with V8's code cache of envd's start,
// made on the host for the node binary and flags envd runs with; the launcher then runs envd from it. A cache that
// cannot be made leaves an install without one (envd compiles as usual), never a failed install. Needs the envd
// bundle (npm run bundle -w @cove/envd).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { ENVD_CODE_CACHE, ENVD_ENTRY, ENVD_NODE_FLAGS, ENVD_START } from '@cove/contracts/sandbox';
import { installEnvd } from '../src/sandbox/envd-install.js';
import { ENVD_BUNDLE } from './orchestrator-fixture.js';

const haveBundle = await access(join(ENVD_BUNDLE, ENVD_START)).then(() => true, () => false);

/** Starts the launcher in `dir` as a slot would (flags, no cache-making), returns how it compiled, and stops it. */
function launch(dir: string): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...ENVD_NODE_FLAGS, join(dir, ENVD_START)], {
      env: { PATH: '/usr/bin:/bin', ENVD_PORT: '0', ENVD_HOST: '127.0.0.1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`envd exited (${code}) before it listened`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const rec = JSON.parse(line) as { msg?: string; codeCache?: string };
      if (rec.msg !== 'envd listening') return;
      child.removeAllListeners('exit');
      child.kill('SIGKILL');
      resolve(rec.codeCache);
    });
  });
}

describe('envd install', { timeout: 60_000, skip: haveBundle ? false : `no envd bundle at ${ENVD_BUNDLE}` }, () => {
  let dataDir: string;
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'cove-envd-install-'));
  });
  after(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('holds a read-only code cache that envd starts from; a second install reuses it', async () => {
    const reasons: string[] = [];
    const dir = await installEnvd(ENVD_BUNDLE, dataDir, process.execPath, (r) => reasons.push(r));
    assert.deepEqual(reasons, []);
    const cache = await stat(join(dir, ENVD_CODE_CACHE));
    assert.ok(cache.size > 100_000, `a cache of envd's start (${cache.size} bytes)`);
    assert.equal(cache.mode & 0o777, 0o444, 'read-only');
    assert.equal(cache.uid, 0, 'the host\'s file');
    assert.equal(await launch(dir), 'used');
    assert.equal(await installEnvd(ENVD_BUNDLE, dataDir, process.execPath), dir, 'same bundle and node: same install');
    assert.equal((await stat(join(dir, ENVD_CODE_CACHE))).mtimeMs, cache.mtimeMs, 'not made again');
  });

  it('runs the cache maker as nobody, reaching the bundle in a data dir nobody may not search', async () => {
    // A stand-in bundle whose launcher sends back who it runs as, in place of a cache.
    const bundle = await mkdtemp(join(tmpdir(), 'cove-envd-install-whoami-'));
    try {
      await writeFile(join(bundle, ENVD_ENTRY), '');
      await writeFile(join(bundle, ENVD_START), "require('node:fs').writeSync(3, `${process.getuid()}:${process.getgid()}`);");
      assert.equal((await stat(dataDir)).mode & 0o777, 0o700, 'the data dir is closed to nobody');
      const dir = await installEnvd(bundle, dataDir, process.execPath);
      assert.equal(await readFile(join(dir, ENVD_CODE_CACHE), 'utf8'), '65534:65534');
    } finally {
      await rm(bundle, { recursive: true, force: true });
    }
  });

  it('a cache that cannot be made leaves an install without one, and envd compiles itself', async (t) => {
    // A "node" that fails (and a binary other than the one above, so a new install): the cache run exits non-zero.
    const bin = await mkdtemp(join(tmpdir(), 'cove-envd-install-bin-'));
    await chmod(bin, 0o755);
    const fake = join(bin, 'node-that-fails');
    await writeFile(fake, '#!/bin/sh\nexit 3\n', { mode: 0o755 });
    t.after(() => rm(bin, { recursive: true, force: true }));
    const reasons: string[] = [];
    const dir = await installEnvd(ENVD_BUNDLE, dataDir, fake, (r) => reasons.push(r));
    assert.equal(reasons.length, 1);
    assert.match(reasons[0]!, /exit 3/);
    assert.ok(!(await readdir(dir)).includes(ENVD_CODE_CACHE), 'no cache in the install');
    assert.equal(await launch(dir), 'none');
  });
});
