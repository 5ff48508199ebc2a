// Host tools started through the spawn broker (run-command.ts): the same results as a spawn of their own, no
// shell, no environment but the one asked for, a broker that dies is replaced without resending what was in
// flight, and an idle broker never holds its parent's event loop open.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../src/sandbox/run-command.js';
import { SpawnBroker, SpawnBrokerFailed } from '../src/sandbox/spawn-broker.js';

describe('spawn broker', () => {
  it('gives a tool its input and returns its exit code, stdout and stderr', async () => {
    const r = await run('sh', ['-c', 'cat; echo out; echo err >&2; exit 3'], { input: 'in\n', allowFailure: true });
    assert.deepEqual(r, { code: 3, stdout: 'in\nout\n', stderr: 'err\n' });
    await assert.rejects(run('sh', ['-c', 'echo why >&2; exit 4']), (e: Error & { code?: string; exitCode?: number }) => {
      assert.equal(e.code, 'runtime_command_failed');
      assert.equal(e.exitCode, 4);
      assert.match(e.message, /why/);
      return true;
    });
  });

  it('passes arguments as they are (no shell) and a missing tool fails as a spawn of its own does', async () => {
    const hostile = ['$(id)', '`id`', ';', '|', '&&', '*', '\n', "'"];
    assert.equal((await run('printf', ['%s|', ...hostile])).stdout, hostile.map((a) => `${a}|`).join(''));
    await assert.rejects(run('/nonexistent/tool', []), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  });

  it('lets no environment through but the one asked for, neither the orchestrator\'s nor its own', async () => {
    process.env.COVE_BROKER_TEST_SECRET = 'must-not-leak';
    const broker = new SpawnBroker();
    const r = await broker.run({ cmd: '/usr/bin/env', args: [], env: { ONLY: 'this' } });
    assert.equal(r.stdout, 'ONLY=this\n');
    // Only Node's own IPC variables, which fork adds.
    const own = readFileSync(`/proc/${broker.pid}/environ`, 'utf8').split('\0').filter(Boolean);
    assert.deepEqual(own.filter((v) => !v.startsWith('NODE_CHANNEL_')), []);
    const { stdout } = await run('env', []);
    assert.doesNotMatch(stdout, /COVE_BROKER_TEST_SECRET/);
  });

  it('fails what was in flight when the broker dies, once, and starts a new broker for the next tool', async () => {
    const broker = new SpawnBroker();
    // A directory of its own: a marker left by an earlier run (another process with this pid) would read as a resend.
    const dir = mkdtempSync(join(tmpdir(), 'cove-broker-test-'));
    const marker = join(dir, 'marker');
    try {
      // It writes its pid (the sleep's, after the exec) so the test can end it: killing the broker does not.
      const inFlight = broker.run({ cmd: 'sh', args: ['-c', `echo $$ >> ${marker}; exec sleep 30`], env: { PATH: '/usr/bin:/bin' } });
      const first = broker.pid!;
      // The tool has started once its line is in the file; then the broker is killed under it.
      for (;;) {
        const ok = await broker.run({ cmd: 'test', args: ['-s', marker], env: { PATH: '/usr/bin:/bin' } });
        if (ok.code === 0) break;
      }
      process.kill(first, 'SIGKILL');
      await assert.rejects(inFlight, (e: Error) => e instanceof SpawnBrokerFailed && /exited \(SIGKILL\)/.test(e.message));
      const again = await broker.run({ cmd: 'echo', args: ['again'], env: { PATH: '/usr/bin:/bin' } });
      assert.equal(again.stdout, 'again\n');
      assert.notEqual(broker.pid, first);
      assert.equal(broker.starts, 2);
      // Not sent twice: the first tool wrote its line once.
      assert.match(readFileSync(marker, 'utf8'), /^\d+\n$/);
    } finally {
      for (const pid of readFileSync(marker, { encoding: 'utf8', flag: 'a+' }).split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('does not keep an idle parent alive: a process that ran one tool exits by itself', async () => {
    const script = `import { run } from ${JSON.stringify(fileURLToPath(new URL('../src/sandbox/run-command.js', import.meta.url)))};
      const r = await run('echo', ['done']); process.stdout.write(r.stdout);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 0);
    assert.equal(out, 'done\n');
  });
});
