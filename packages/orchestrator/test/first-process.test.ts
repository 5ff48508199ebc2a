// The wait for a slot's first process to answer (sandbox/first-process.ts): how it paces its polls around the moment
// envd usually answers, and that a real wait teaches it that moment.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import { ENVD_PORT } from '@cove/contracts/sandbox';
import { AnswerTime, waitHealthy } from '../src/sandbox/first-process.js';
import { processStartTime } from '../src/sandbox/slot-store.js';

describe('the wait for a first process', () => {
  it('polls every 25 ms until it knows when envd answers, then closely around that moment only', () => {
    const t = new AnswerTime();
    assert.equal(t.pollIn(0), 25);
    assert.equal(t.pollIn(500), 25);
    t.observe(100);
    assert.equal(t.pollIn(0), 25, 'far before the expected moment: the usual pace');
    assert.equal(t.pollIn(60), 15, 'the last slow poll lands where close polling starts (3/4 of the expected time)');
    assert.equal(t.pollIn(75), 5);
    assert.equal(t.pollIn(199), 5);
    assert.equal(t.pollIn(200), 25, 'twice the expected time: late, back to the usual pace');
    // A moving average: one slow boot moves it by a fifth of the difference.
    t.observe(600);
    assert.equal(t.pollIn(150), 5, 'expected now 200 ms: close polling from 150 ms');
    assert.equal(t.pollIn(140), 10);
    assert.equal(t.pollIn(100), 25);
  });

  it('a wait that succeeds teaches the estimate when envd answers', async () => {
    // 127.0.0.2 is loopback and no slot's: nothing else listens on envd's port there. The server starts listening
    // 100 ms into the wait, as a booting envd would.
    const server = createServer((_req, res) => res.writeHead(204).end());
    const listening = new Promise<void>((resolve) => setTimeout(() => server.listen(ENVD_PORT, '127.0.0.2', resolve), 100));
    try {
      const t = new AnswerTime();
      const start = await processStartTime(process.pid);
      const t0 = Date.now();
      await waitHealthy('test-slot', '127.0.0.2', process.pid, start, 5_000, t);
      const took = Date.now() - t0;
      assert.ok(took >= 100, `answered after ${took} ms, before the server listened`);
      assert.equal(t.pollIn(took), 5, `learned: envd answers after ~${took} ms`);
      assert.equal(t.pollIn(0), 25);
      assert.equal(t.pollIn(3 * took), 25);
    } finally {
      await listening;
      server.close();
    }
  });

  it('still fails at once when the first process is gone, whatever the estimate', async () => {
    const t = new AnswerTime();
    t.observe(10_000);
    await assert.rejects(waitHealthy('test-slot', '127.0.0.2', process.pid, 'not-its-start-time', 60_000, t), /first process exited/);
  });
});
