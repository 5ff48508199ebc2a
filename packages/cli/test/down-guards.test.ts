// The doors of `cove down` (CLI as a process, real teardown, needs root): it does not clean the host objects of an
// orchestrator it does not know, and `--purge` neither deletes through a mount below a data dir nor follows a
// symlink out of it. Port offset 300 with node data in a temporary dir: instance cove300, RPC port 5308.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../src/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'cove-cli-down-'));
const nodeData = join(dir, 'var-lib-cove');
const dataDir = `${nodeData}-300`;
const flags = ['--state-dir', join(dir, 'state'), '--port-offset', '300', '--nodes', '1', '--node-data-dir', nodeData];
after(() => {
  // Never rm through a mount this test made, whatever failed above.
  try {
    execFileSync('umount', [join(dataDir, 'lent', 'dir')], { stdio: 'ignore' });
  } catch {
    /* not mounted */
  }
  rmSync(dir, { recursive: true, force: true });
});

async function cove(args: string[]): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, out };
}

test('down does not clean a node whose RPC port another orchestrator still answers on; it does once the port is free', async () => {
  const slot = join(dataDir, 'slots', 'abc');
  mkdirSync(slot, { recursive: true });
  writeFileSync(join(slot, 'marker'), 'a slot of someone else');
  const server = createServer((s) => s.destroy());
  server.listen(5308, '127.0.0.1');
  await once(server, 'listening');
  try {
    const r = await cove(['down', ...flags]);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /port 5308 still answers/);
    assert.ok(existsSync(join(slot, 'marker')), 'the slot was left alone');
  } finally {
    server.close();
  }
  // Control: with nobody on the port the same down destroys the slot (so the check above could fail).
  const r = await cove(['down', ...flags]);
  assert.equal(r.code, 0, r.out);
  assert.equal(existsSync(slot), false, r.out);
});

test('down --purge refuses while something is mounted below a data dir, and never follows a link out of it', async () => {
  const outside = join(dir, 'outside');
  mkdirSync(outside, { recursive: true });
  writeFileSync(join(outside, 'precious'), 'host data');
  // A host dir bound below the data dir (as lent dirs are), and a link a tenant could have left.
  const lent = join(dataDir, 'lent', 'dir');
  mkdirSync(lent, { recursive: true });
  execFileSync('mount', ['--bind', outside, lent]);
  symlinkSync(outside, join(dataDir, 'escape'));
  const refused = await cove(['down', '--purge', ...flags]);
  assert.equal(refused.code, 1, refused.out);
  assert.match(refused.out, /still mounted below it/);
  assert.equal(readFileSync(join(outside, 'precious'), 'utf8'), 'host data');
  assert.ok(existsSync(dataDir), 'nothing was removed');

  execFileSync('umount', [lent]);
  const purged = await cove(['down', '--purge', ...flags]);
  assert.equal(purged.code, 0, purged.out);
  assert.equal(existsSync(dataDir), false, 'the data dir is gone');
  assert.equal(readFileSync(join(outside, 'precious'), 'utf8'), 'host data', 'the link was removed, not followed');
});

test('purge keeps a machine-wide cache with its mount (CRIU\'s kernel-feature tmpfs) and removes the rest', async () => {
  const { purgeDir } = await import('../src/host-cleanup.js');
  const data = join(dir, 'default-data');
  const cache = join(data, 'criu-kdat');
  mkdirSync(cache, { recursive: true });
  mkdirSync(join(data, 'slots', 'x'), { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'cove-test-kdat', cache]);
  try {
    writeFileSync(join(cache, 'criu.kdat'), 'cached');
    // Not kept: the mount below refuses the purge, as any mount does.
    assert.throws(() => purgeDir(data, []), /still mounted below it/);
    purgeDir(data, [cache]);
    assert.equal(existsSync(join(data, 'slots')), false, 'the rest is gone');
    assert.equal(readFileSync(join(cache, 'criu.kdat'), 'utf8'), 'cached', 'the kept cache and its mount stay');
  } finally {
    execFileSync('umount', [cache]);
  }
});
