import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CommandExitError, Sandbox } from 'e2b';
import { startEnvd, tempDir, waitFor, type RunningEnvd } from './envd-process.js';

describe('commands through the unchanged e2b SDK', () => {
  let envd: RunningEnvd;
  let sbx: Sandbox;
  let tmp: Awaited<ReturnType<typeof tempDir>>;

  before(async () => {
    envd = await startEnvd();
    const res = await envd.init({ defaultUser: 'root', envVars: { COVE_GLOBAL: 'global-value' } });
    assert.equal(res.status, 204);
    sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
    tmp = await tempDir();
  });
  after(async () => {
    await tmp.cleanup();
    await envd.stop();
  });

  test('run returns stdout, stderr and exit code 0', async () => {
    const r = await sbx.commands.run('echo hello; echo oops >&2');
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'hello\n');
    assert.equal(r.stderr, 'oops\n');
  });

  test('non-zero exit throws CommandExitError with the code', async () => {
    await assert.rejects(sbx.commands.run('echo bad >&2; exit 3'), (e: unknown) => {
      assert.ok(e instanceof CommandExitError);
      assert.equal(e.exitCode, 3);
      assert.equal(e.stderr, 'bad\n');
      assert.match(e.error ?? '', /exit status 3/);
      return true;
    });
  });

  test('callbacks receive streamed output', async () => {
    const chunks: string[] = [];
    await sbx.commands.run('for i in 1 2 3; do echo line$i; done', { onStdout: (d) => void chunks.push(d) });
    assert.equal(chunks.join(''), 'line1\nline2\nline3\n');
  });

  test('env vars: /init globals, per-command envs, no leak to later commands', async () => {
    const r = await sbx.commands.run('echo "$COVE_GLOBAL:$ONLY_HERE"', { envs: { ONLY_HERE: 'x1' } });
    assert.equal(r.stdout, 'global-value:x1\n');
    const later = await sbx.commands.run('echo "[$ONLY_HERE]"');
    assert.equal(later.stdout, '[]\n');
    const secret = await sbx.commands.run('echo "[$COVE_ENVD_INIT_TOKEN]"');
    assert.equal(secret.stdout, '[]\n');
  });

  test('user environment: HOME, USER and default cwd come from /etc/passwd', async () => {
    const r = await sbx.commands.run('echo "$HOME $USER $LOGNAME"; pwd');
    assert.equal(r.stdout, '/root root root\n/root\n');
  });

  test('cwd option', async () => {
    const r = await sbx.commands.run('pwd', { cwd: tmp.dir });
    assert.equal(r.stdout.trim(), tmp.dir);
    await assert.rejects(sbx.commands.run('pwd', { cwd: `${tmp.dir}/missing` }));
  });

  test('background command, list, wait', async () => {
    const h = await sbx.commands.run('sleep 0.3; echo done', { background: true });
    const listed = await sbx.commands.list();
    const mine = listed.find((p) => p.pid === h.pid);
    assert.ok(mine, 'background process is listed');
    assert.equal(mine.cmd, '/bin/bash');
    const r = await h.wait();
    assert.equal(r.stdout, 'done\n');
    const after = await sbx.commands.list();
    assert.ok(!after.some((p) => p.pid === h.pid), 'finished process is dropped');
  });

  test('stdin: send and close', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    await sbx.commands.sendStdin(h.pid, 'hello stdin\n');
    await waitFor(() => h.stdout.includes('hello stdin'), 'echoed stdin');
    await sbx.commands.closeStdin(h.pid);
    const r = await h.wait();
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'hello stdin\n');
  });

  test('kill ends the process with a signal status', async () => {
    const h = await sbx.commands.run('sleep 30', { background: true });
    assert.equal(await h.kill(), true);
    await assert.rejects(h.wait(), (e: unknown) => {
      assert.ok(e instanceof CommandExitError);
      assert.match(e.error ?? '', /signal: killed/);
      return true;
    });
    assert.equal(await sbx.commands.kill(h.pid), false, 'killing a gone pid reports false (not_found)');
  });

  test('disconnect keeps the process running; connect streams further output', async () => {
    const h = await sbx.commands.run('read line; echo "got $line"', { background: true, stdin: true });
    await h.disconnect();
    const again = await sbx.commands.connect(h.pid);
    assert.equal(again.pid, h.pid);
    await sbx.commands.sendStdin(h.pid, 'ping\n');
    const r = await again.wait();
    assert.equal(r.stdout, 'got ping\n');
  });

  test('command timeout kills the process (deadline_exceeded)', async () => {
    const h = await sbx.commands.run('sleep 30', { background: true, timeoutMs: 500 });
    await assert.rejects(h.wait());
    await waitFor(async () => !(await sbx.commands.list()).some((p) => p.pid === h.pid), 'process killed at deadline');
  });

  test('connect to an unknown pid fails with not found', async () => {
    await assert.rejects(sbx.commands.connect(999_999), /not found/i);
  });
});
