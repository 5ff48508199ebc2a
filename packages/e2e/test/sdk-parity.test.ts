// Issue 13 "Differences found": small behaviours the unchanged `e2b` SDK sees differently from E2B's cloud —
// a per-boot boot_id (kept by a memory resume, in place and on another node; new after a filesystem-only
// resume), list startedAfter inclusive, the mcp option refused, a build step run as an unknown user failing as
// that step, and Template().fromBaseImage(). (File metadata, remove and multi-file writes: sdk-files.test.ts.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { BuildError, Sandbox, Template, type LogEntry } from 'e2b';
import { deployment, type Deployment } from './deployment.js';
import { nodeOf, setDraining } from './nodes.js';

const BUILD_TIMEOUT = 240_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

async function bootId(sbx: Sandbox): Promise<string> {
  const r = await sbx.commands.run('cat /proc/sys/kernel/random/boot_id');
  return r.stdout.trim();
}

describe('SDK parity: the remaining small differences', () => {
  const tag = randomBytes(4).toString('hex');
  const made: Sandbox[] = [];
  let d: Deployment;
  before(() => {
    d = deployment();
  });
  after(async () => {
    for (const n of d.nodes) await setDraining(d, n.rpcPort, false).catch(() => undefined);
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
  });

  test('boot_id is per sandbox boot: a memory resume keeps it (in place and on another node), a filesystem-only resume is a new boot', async () => {
    const host = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    const a = await Sandbox.create({ timeoutMs: 300_000 });
    made.push(a);
    const b = await Sandbox.create({ timeoutMs: 300_000 });
    made.push(b);
    const idA = await bootId(a);
    assert.match(idA, UUID);
    assert.notEqual(idA, host, 'not the host\'s boot');
    assert.notEqual(await bootId(b), idA, 'each sandbox is its own boot');
    // root inside can neither rewrite it nor unmount it to see the host's.
    const abuse = await a.commands.run(
      'sudo sh -c "echo 00000000-0000-4000-8000-000000000000 > /proc/sys/kernel/random/boot_id; umount /proc/sys/kernel/random/boot_id" 2>/dev/null; cat /proc/sys/kernel/random/boot_id',
    );
    assert.equal(abuse.stdout.trim().split('\n').at(-1), idA, 'the sandbox could not change or uncover its boot_id');

    // A memory pause and resume (wherever the scheduler puts it) is the same boot.
    assert.equal(await a.pause(), true);
    const again = await Sandbox.connect(a.sandboxId, { timeoutMs: 300_000 });
    assert.equal(await bootId(again), idA, 'a memory resume keeps the boot_id');

    // On the other node: the origin drains, so the resume has to land elsewhere.
    assert.ok(d.nodes.length >= 2, `the e2e deployment runs ${d.nodes.length} node(s); it needs 2`);
    const origin = await nodeOf(d, a.sandboxId);
    assert.ok(origin, 'runs on one of the nodes');
    assert.equal(await again.pause(), true);
    await setDraining(d, origin, true);
    try {
      const moved = await Sandbox.connect(a.sandboxId, { timeoutMs: 300_000 });
      const now = await nodeOf(d, a.sandboxId);
      assert.ok(now && now !== origin, `resumed on another node (rpc ${now}, origin ${origin})`);
      assert.equal(await bootId(moved), idA, 'a memory resume on another node keeps the boot_id');
    } finally {
      await setDraining(d, origin, false);
    }

    // Filesystem-only: the files stay, the boot is new.
    await a.files.write('/home/user/kept.txt', 'kept');
    assert.equal(await a.pause({ keepMemory: false }), true);
    const rebooted = await Sandbox.connect(a.sandboxId, { timeoutMs: 300_000 });
    assert.equal(await rebooted.files.read('/home/user/kept.txt'), 'kept');
    const idNew = await bootId(rebooted);
    assert.match(idNew, UUID);
    assert.notEqual(idNew, idA, 'a filesystem-only resume is a new boot');
  });

  test('list startedAfter includes the sandbox that started at exactly that instant', async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000, metadata: { parity: tag } });
    made.push(sbx);
    const info = await sbx.getInfo();
    const listed = await Sandbox.list({ query: { startedAfter: info.startedAt, metadata: { parity: tag } } }).nextItems();
    assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId]);
    const later = await Sandbox.list({ query: { startedAfter: new Date(info.startedAt.getTime() + 1000), metadata: { parity: tag } } }).nextItems();
    assert.deepEqual(later, [], 'a bound after it excludes it');
  });

  test('the mcp create option is refused clearly (501), and no sandbox is left running', async () => {
    const mtag = `mcp-${tag}`;
    await assert.rejects(Sandbox.create('base', { mcp: { gitmcp: {} }, metadata: { parity: mtag } } as never), (err: Error) => {
      assert.match(err.message, /MCP/);
      return true;
    });
    assert.deepEqual(await Sandbox.list({ query: { metadata: { parity: mtag } } }).nextItems(), []);
  });

  test('runCmd as a user the template does not have fails as that step, saying so (not as a base error)', { timeout: BUILD_TIMEOUT }, async () => {
    const logs: LogEntry[] = [];
    const tpl = Template().fromTemplate('base').runCmd('echo first').runCmd('echo never-$((6*7))', { user: 'nobody-here' });
    await assert.rejects(Template.build(tpl, `e2e-nouser-${tag}`, { cpuCount: 1, memoryMB: 256, onBuildLogs: (e) => logs.push(e) }), (err: unknown) => {
      assert.ok(err instanceof BuildError, `got ${String(err)}`);
      assert.match(err.message, /user "nobody-here" does not exist/);
      assert.doesNotMatch(err.message, /base/i, 'not reported as a base-resolution failure');
      return true;
    });
    // The log names the step's command; only its output (the expanded text) would prove it ran.
    assert.doesNotMatch(logs.map((e) => e.message).join('\n'), /never-42/, 'the step never ran');
  });

  test('Template().fromBaseImage() builds on Cove\'s base template and its sandboxes run', { timeout: BUILD_TIMEOUT }, async () => {
    const name = `e2e-frombase-${tag}`;
    const info = await Template.build(Template().fromBaseImage().runCmd(`echo from-base-${tag} > /tmp/marker`), name, { cpuCount: 1, memoryMB: 256 });
    assert.equal(info.name, name);
    const sbx = await Sandbox.create(name, { timeoutMs: 120_000 });
    made.push(sbx);
    assert.equal((await sbx.commands.run('cat /tmp/marker')).stdout.trim(), `from-base-${tag}`);
    assert.equal((await sbx.commands.run('cat /etc/os-release')).exitCode, 0, 'the base template\'s userland');
  });
});
