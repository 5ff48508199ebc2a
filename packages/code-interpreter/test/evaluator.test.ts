// The bundled JavaScript/TypeScript evaluator (dist/guest/js/evaluator.cjs) as the server drives
// it: JSON requests on stdin, frames on the fd named by COVE_FRAME_FD. Needs no root or rootfs.
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { guestDir } from '../src/index.js';

type Frame = { t: string; id?: number; s?: string; data?: Record<string, string>; ename?: string; evalue?: string };

describe('JavaScript/TypeScript evaluator', () => {
  let child: ChildProcessWithoutNullStreams;
  const pending: Frame[] = [];
  let waiters: Array<() => void> = [];
  let nextId = 0;

  before(async () => {
    child = spawn(process.execPath, [join(guestDir(), 'js', 'evaluator.cjs')], {
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, COVE_FRAME_FD: '3' },
    }) as unknown as ChildProcessWithoutNullStreams;
    createInterface({ input: child.stdio[3] as Readable }).on('line', (line) => {
      pending.push(JSON.parse(line) as Frame);
      const w = waiters;
      waiters = [];
      w.forEach((f) => f());
    });
    const ready = await nextFrame();
    assert.equal(ready.t, 'ready');
  });
  after(() => {
    child.kill('SIGKILL');
  });

  async function nextFrame(): Promise<Frame> {
    while (pending.length === 0) await new Promise<void>((r) => waiters.push(r));
    return pending.shift()!;
  }

  /** Runs one cell; returns its frames up to (not including) `done`. */
  async function run(code: string, silent = false): Promise<Frame[]> {
    const id = ++nextId;
    child.stdin.write(JSON.stringify({ id, code, silent }) + '\n');
    const frames: Frame[] = [];
    for (;;) {
      const f = await nextFrame();
      if (f.t === 'done' && f.id === id) return frames;
      frames.push(f);
    }
  }
  const result = (frames: Frame[]) => frames.find((f) => f.t === 'result')?.data?.['text/plain'];

  it('keeps declarations across cells and lets a cell declare them again', async () => {
    assert.deepEqual(await run('const a = 1; let b = 2; var c = 3; function f() { return a + b + c } class K { v() { return f() } }'), []);
    assert.equal(result(await run('new K().v()')), '6');
    assert.equal(result(await run('const a = 10; a + b')), '12', 'a re-run cell may declare a const again');
    assert.equal(result(await run('const { x, y: [z] } = { x: 1, y: [2] }; x + z')), '3');
  });

  it('strips TypeScript, turns imports into require, supports top-level await', async () => {
    const frames = await run(
      "import { join } from 'node:path'\ninterface P { n: number }\nconst p: P = { n: 2 }\nconst v = await Promise.resolve(join('a', String(p.n)))\nv",
    );
    assert.equal(result(frames), "'a/2'");
    assert.equal(result(await run('hoisted()\nfunction hoisted(): string { return "ok" }')), "'ok'");
  });

  it('keeps stdout in order with the result, and reports errors with the cell frames only', async () => {
    const frames = await run('console.log("one"); process.stdout.write("two\\n"); console.error("three"); 4');
    assert.deepEqual(frames.map((f) => [f.t, f.s ?? f.data?.['text/plain']]), [
      ['stdout', 'one\n'], ['stdout', 'two\n'], ['stderr', 'three\n'], ['result', '4'],
    ]);
    const err = (await run('null.x')).find((f) => f.t === 'error')!;
    assert.equal(err.ename, 'TypeError');
    const tb = (err as unknown as { traceback: string[] }).traceback.join('\n');
    assert.doesNotMatch(tb, /evaluator\.cjs|node:vm/);
    const syntax = (await run('let = ;')).find((f) => f.t === 'error')!;
    assert.equal(syntax.ename, 'SyntaxError');
  });

  it('shows nothing for a silent cell, and cuts big output into small frames', async () => {
    assert.deepEqual(await run('process.env.Q = "1"; 5', true), []);
    const frames = await run('console.log("x".repeat(200000))');
    assert.ok(frames.length >= 4 && frames.every((f) => f.t === 'stdout' && (f.s ?? '').length <= 64 * 1024));
    assert.equal(frames.map((f) => f.s).join(''), 'x'.repeat(200000) + '\n');
  });

  it('stops an endless synchronous loop and a pending await on SIGINT, and goes on', async () => {
    const id = ++nextId;
    child.stdin.write(JSON.stringify({ id, code: 'console.log("in"); while (true) {}' }) + '\n');
    assert.equal((await nextFrame()).s, 'in\n');
    child.kill('SIGINT');
    const err = await nextFrame();
    assert.equal(err.ename, 'Interrupted');
    assert.equal((await nextFrame()).t, 'done');
    // "wait" is written after the first await, so the synchronous part has returned and the
    // SIGINT meets the evaluator's handler (not vm's breakOnSigint watchdog).
    const id2 = ++nextId;
    child.stdin.write(JSON.stringify({ id: id2, code: 'await null; console.log("wait"); await new Promise(() => {})' }) + '\n');
    assert.equal((await nextFrame()).s, 'wait\n');
    child.kill('SIGINT');
    assert.equal((await nextFrame()).ename, 'Interrupted');
    assert.equal((await nextFrame()).t, 'done');
    assert.equal(result(await run('1 + 1')), '2');
  });
});
