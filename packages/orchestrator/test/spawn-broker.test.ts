// Host tools started through the native spawn broker (run-command.ts): the same results as a spawn of their own,
// no shell, no environment but the one asked for, many at once, a clean start (stdio only, default signals), a
// flood of output stopped, a broker that dies is replaced without resending what was in flight, and an idle broker
// never holds its parent's event loop open.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../src/sandbox/run-command.js';
import { SpawnBroker, SpawnBrokerFailed, ToolOutputTooLarge } from '../src/sandbox/spawn-broker.js';

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
    assert.equal(readFileSync(`/proc/${broker.pid}/environ`, 'utf8'), '');
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

  it('runs tools at once and answers each when it ends, whatever the order they were asked in', async () => {
    const broker = new SpawnBroker();
    const env = { PATH: '/usr/bin:/bin' };
    const order: string[] = [];
    // The slow one waits on a FIFO the fast one's answer opens: it cannot end first.
    const dir = mkdtempSync(join(tmpdir(), 'cove-broker-test-'));
    try {
      await broker.run({ cmd: 'mkfifo', args: [join(dir, 'gate')], env });
      const slow = broker.run({ cmd: 'sh', args: ['-c', `read x < ${join(dir, 'gate')}; echo slow`], env }).then((r) => order.push(r.stdout.trim()));
      const fast = await broker.run({ cmd: 'echo', args: ['fast'], env });
      order.push(fast.stdout.trim());
      await broker.run({ cmd: 'sh', args: ['-c', `echo go > ${join(dir, 'gate')}`], env });
      await slow;
      assert.deepEqual(order, ['fast', 'slow']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives a tool a clean start: its input whole, only stdio open, no signal blocked or ignored, the cwd and PATH asked for', async () => {
    const broker = new SpawnBroker();
    const env = { PATH: '/usr/bin:/bin' };
    const big = 'x'.repeat(3 << 20) + '\n';
    const echoed = await broker.run({ cmd: 'cat', args: [], env, input: big });
    assert.equal(echoed.stdout.length, big.length);
    // ls's own listing: its stdio, and the directory it reads.
    const fds = await broker.run({ cmd: 'ls', args: ['-l', '/proc/self/fd'], env });
    const open = fds.stdout.split('\n').filter((l) => l.includes(' -> ')).map((l) => l.split(' ').slice(-3).join(' '));
    assert.deepEqual(open.filter((l) => !/^\d+ -> \/proc\/\d+\/fd$/.test(l)).map((l) => l.split(' ')[0]), ['0', '1', '2']);
    // The tool's own status (a shell's would show what it blocks around its own forks).
    const sig = await broker.run({ cmd: 'grep', args: ['-E', '^Sig(Blk|Ign)', '/proc/self/status'], env });
    assert.match(sig.stdout, /SigBlk:\s+0+\n/);
    assert.match(sig.stdout, /SigIgn:\s+0+\n/);
    assert.equal((await broker.run({ cmd: 'pwd', args: [], env, cwd: '/usr' })).stdout, '/usr\n');
    // Found in the request's PATH only: the broker's own environment is empty.
    await assert.rejects(broker.run({ cmd: 'true', args: [], env: { PATH: '/nonexistent' } }), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.syscall === 'spawn true');
    // A detached tool's stdio is /dev/null, never a pipe of the host's.
    const dir = mkdtempSync(join(tmpdir(), 'cove-broker-test-'));
    try {
      const out = join(dir, 'fds');
      const r = await broker.run({ cmd: 'sh', args: ['-c', `fds=$(readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2); echo "$fds" > ${out}`], env, nullStdio: true });
      assert.deepEqual(r, { code: 0, stdout: '', stderr: '' });
      assert.equal(readFileSync(out, 'utf8'), '/dev/null\n/dev/null\n/dev/null\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stops a tool that floods its output, reports a tool ended by a signal, and refuses a NUL in an argument', async () => {
    const broker = new SpawnBroker();
    const env = { PATH: '/usr/bin:/bin' };
    await assert.rejects(broker.run({ cmd: 'yes', args: [], env }), (e: Error) => e instanceof ToolOutputTooLarge);
    assert.deepEqual(await broker.run({ cmd: 'sh', args: ['-c', 'kill -TERM $$'], env }), { code: null, stdout: '', stderr: '' });
    await assert.rejects(broker.run({ cmd: 'echo', args: ['a\0b'], env }), (e: NodeJS.ErrnoException) => e.code === 'ERR_INVALID_ARG_VALUE');
    // The same broker still serves.
    assert.equal((await broker.run({ cmd: 'echo', args: ['still'], env })).stdout, 'still\n');
    assert.equal(broker.starts, 1);
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
