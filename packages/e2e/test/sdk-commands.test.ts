// Issue 2 proof: the unchanged `e2b` SDK runs commands in a real isolated sandbox.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CommandExitError, Sandbox } from 'e2b';
import { deployment, eventually } from './deployment.js';

describe('commands through the unchanged SDK', () => {
  let sbx: Sandbox;
  before(async () => {
    deployment();
    sbx = await Sandbox.create({ timeoutMs: 300_000 });
  });
  after(async () => {
    await sbx?.kill();
  });

  test('run returns stdout, stderr and the exit code', async () => {
    const r = await sbx.commands.run('echo out; echo err >&2; whoami; hostname');
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, `out\nuser\n${sbx.sandboxId}\n`);
    assert.equal(r.stderr, 'err\n');
  });

  test('non-zero exit raises CommandExitError with the outputs', async () => {
    await assert.rejects(sbx.commands.run('echo partial; exit 3'), (err: unknown) => {
      assert.ok(err instanceof CommandExitError);
      assert.equal(err.exitCode, 3);
      assert.equal(err.stdout, 'partial\n');
      return true;
    });
  });

  test('background command, wait, list and kill', async () => {
    const h = await sbx.commands.run('sleep 0.2; echo done', { background: true });
    const r = await h.wait();
    assert.equal(r.stdout, 'done\n');

    const long = await sbx.commands.run('sleep 600', { background: true });
    const listed = await sbx.commands.list();
    assert.ok(listed.some((p) => p.pid === long.pid));
    assert.equal(await sbx.commands.kill(long.pid), true);
    await assert.rejects(long.wait(), CommandExitError);
    assert.equal(await sbx.commands.kill(999_999), false);
  });

  test('stdin: send input then close it', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    await sbx.commands.sendStdin(h.pid, 'hello stdin\n');
    await sbx.commands.closeStdin(h.pid);
    const r = await h.wait();
    assert.equal(r.stdout, 'hello stdin\n');
  });

  test('connect to a running command and receive its further output', async () => {
    const h = await sbx.commands.run('read line; echo "got $line"', { background: true, stdin: true });
    await h.disconnect();
    let seen = '';
    const again = await sbx.commands.connect(h.pid, { onStdout: (d) => void (seen += d) });
    await sbx.commands.sendStdin(h.pid, 'ping\n');
    const r = await again.wait();
    assert.equal(r.exitCode, 0);
    assert.match(seen + r.stdout, /got ping/);
  });

  test('env vars are per command and do not leak into later ones', async () => {
    const a = await sbx.commands.run('echo "$COVE_ONLY_HERE"', { envs: { COVE_ONLY_HERE: 'first' } });
    assert.equal(a.stdout, 'first\n');
    const b = await sbx.commands.run('echo "[$COVE_ONLY_HERE]"');
    assert.equal(b.stdout, '[]\n');
  });

  test('create-time envs reach every command; cwd and user options apply', async () => {
    const s2 = await Sandbox.create({ envs: { COVE_GLOBAL: 'g1' }, timeoutMs: 120_000 });
    try {
      assert.equal((await s2.commands.run('echo $COVE_GLOBAL')).stdout, 'g1\n');
      assert.equal((await s2.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n');
      assert.equal((await s2.commands.run('whoami', { user: 'root' })).stdout, 'root\n');
      assert.equal((await s2.commands.run('echo $HOME')).stdout, '/home/user\n');
    } finally {
      await s2.kill();
    }
  });

  test('sudo works for user without a password', async () => {
    const r = await sbx.commands.run('sudo -n id -u && sudo -n touch /root/x && sudo -n ls /root');
    assert.equal(r.stdout, '0\nx\n');
  });

  test("a command's login shell keeps root's and the user's PATH apart without running `id`", async () => {
    // A stand-in `id` first on PATH records every call (the profile's PATH is set after its uid test).
    await sbx.commands.run(`printf '#!/bin/sh\\necho "$*" >> /tmp/id-calls\\nexec /usr/bin/id "$@"\\n' > /usr/local/bin/id && chmod 755 /usr/local/bin/id`, { user: 'root' });
    try {
      const asUser = await sbx.commands.run('echo "$PATH"');
      const asRoot = await sbx.commands.run('echo "$PATH"', { user: 'root' });
      assert.doesNotMatch(asUser.stdout, /sbin/);
      assert.match(asRoot.stdout, /\/usr\/sbin/);
      assert.equal((await sbx.commands.run('cat /tmp/id-calls 2>/dev/null || true')).stdout, '');
    } finally {
      await sbx.commands.run('rm -f /usr/local/bin/id /tmp/id-calls', { user: 'root' });
    }
  });

  test('the command deadline kills a process that runs too long', async () => {
    await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1000 }));
    await eventually(async () => !(await sbx.commands.list()).some((p) => p.args.join(' ').includes('sleep 30')), 10_000, 'sleep gone');
  });
});
