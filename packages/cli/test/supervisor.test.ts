// stop() of a component process (supervisor.ts): a process that has exited but is not yet reaped (a zombie) has
// stopped. Components outlive the `cove up` that started them, so init is their parent; where init reaps late,
// every stop waited for it, and a zombie whose parent never reaps it was waited on forever after the SIGKILL.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pollUntil } from '@cove/test-support/eventually';
import { stop } from '../src/supervisor.js';

const dir = mkdtempSync(join(tmpdir(), 'cove-supervisor-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const state = (pid: number): string => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat[stat.lastIndexOf(')') + 2]!;
};

test('stop() counts a zombie as stopped instead of waiting for its parent to reap it', { skip: process.platform !== 'linux' && 'needs /proc' }, async () => {
  // The shell starts the component, then becomes a process that never reaps it: once stopped it stays a zombie.
  const parent = spawn('sh', ['-c', 'sleep 600 & echo $!; exec sleep 600'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
    const pid = Number(line.toString().trim());
    assert.ok(pid > 0);
    // Both must have become `sleep` first: the shell, before its exec, may still reap the child it started, and
    // the scenario needs a parent that never does.
    const isSleep = (p: number) => { try { return readFileSync(`/proc/${p}/cmdline`, 'utf8') === ['sleep', '600', ''].join('\0'); } catch { return false; } };
    assert.ok(await pollUntil(() => isSleep(parent.pid!) && isSleep(pid), 10_000, 5), 'the shell and its child exec sleep');
    writeFileSync(join(dir, 'component.pid'), JSON.stringify({ name: 'component', pid, entry: 'sleep' }) + '\n');
    const t0 = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const stopped = await Promise.race([stop(dir, 'component'), new Promise<'waiting'>((r) => (timer = setTimeout(() => r('waiting'), 5_000)))]);
    clearTimeout(timer);
    assert.equal(stopped, true, `stop() still waiting after ${Date.now() - t0} ms`);
    assert.equal(state(pid), 'Z', 'the scenario: the stopped process is an unreaped zombie');
    assert.equal(existsSync(join(dir, 'component.pid')), false, 'its pid file is removed');
  } finally {
    parent.kill('SIGKILL');
  }
});
