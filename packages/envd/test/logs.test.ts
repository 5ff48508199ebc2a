import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ENVD_INIT_LOG_SEQ_HEADER, ENVD_LOGS_PATH, ENVD_LOGS_WAIT_PATH, EnvdLogsReply, EnvdLogsWaitReply } from '@cove/contracts/telemetry';
import { CommandExitError, Sandbox } from 'e2b';
import { LogRing, LOG_RING_MAX_BYTES } from '../src/log-ring.js';
import { startEnvd, type RunningEnvd } from './envd-process.js';

describe('log ring', () => {
  test('keeps entries in order and reads after a sequence number', () => {
    const ring = new LogRing();
    for (let i = 0; i < 5; i++) ring.record('info', `m${i}`, { i });
    const all = ring.read(0, 100);
    assert.deepEqual(all.entries.map((e) => e.message), ['m0', 'm1', 'm2', 'm3', 'm4']);
    assert.equal(all.dropped, 0);
    assert.equal(all.next, 5);
    const tail = ring.read(3, 100);
    assert.deepEqual(tail.entries.map((e) => e.seq), [4, 5]);
    const page = ring.read(0, 2);
    assert.deepEqual(page.entries.map((e) => e.seq), [1, 2]);
    assert.equal(page.next, 2);
    assert.deepEqual(ring.read(5, 100), { entries: [], dropped: 0, next: 5 });
  });

  test('is bounded in bytes and counts what it overwrote', () => {
    const ring = new LogRing();
    const big = 'x'.repeat(3000);
    for (let i = 0; i < 2000; i++) ring.record('info', big, { i });
    assert.ok(ring.size <= LOG_RING_MAX_BYTES, `ring holds ${ring.size} bytes`);
    const r = ring.read(0, 1000);
    assert.ok(r.dropped > 1000, `dropped ${r.dropped}`);
    assert.equal(r.entries[0].seq, r.dropped + 1, 'the first entry kept follows the dropped ones');
    // A reader that was up to date loses nothing.
    const last = ring.read(1990, 1000);
    assert.equal(last.dropped, 0);
    assert.equal(last.entries.length, 10);
  });

  test('clips oversized messages and fields to the contract bounds', () => {
    const ring = new LogRing();
    const fields: Record<string, string> = {};
    for (let i = 0; i < 100; i++) fields[`k${i}`.padEnd(200, 'k')] = 'v'.repeat(5000);
    ring.record('warn', 'm'.repeat(100_000), fields);
    const reply = ring.read(0, 10);
    assert.ok(EnvdLogsReply.safeParse(reply).success, 'what envd sends passes the node-side schema');
  });

  test('a cursor from a previous envd (past the end) starts over', () => {
    const ring = new LogRing();
    ring.record('info', 'a');
    assert.deepEqual(ring.read(500, 10).entries.map((e) => e.message), ['a']);
  });

  test('a wait ends at once on news, on the next entry, at its bound or its abort, and leaves nothing held', async () => {
    const ring = new LogRing();
    const never = new AbortController().signal;
    ring.record('info', 'a');
    await ring.waitBeyond(0, 60_000, never); // news already there (and a cursor past the end, below)
    await ring.waitBeyond(7, 60_000, never);
    const woken = ring.waitBeyond(1, 60_000, never);
    assert.equal(ring.waiting, 1);
    ring.record('info', 'b');
    await woken;
    assert.equal(ring.waiting, 0);
    await ring.waitBeyond(2, 20, never);
    assert.equal(ring.waiting, 0, 'the bound frees the waiter');
    const gone = new AbortController();
    const aborted = ring.waitBeyond(2, 60_000, gone.signal);
    gone.abort();
    await aborted;
    assert.equal(ring.waiting, 0, 'an abort frees the waiter');
    assert.equal(ring.last, 2);
  });
});

describe('GET /cove/logs', () => {
  let envd: RunningEnvd;
  let sbx: Sandbox;
  const logs = (q = '', token?: string) =>
    fetch(`${envd.url}${ENVD_LOGS_PATH}${q}`, { headers: token === undefined ? {} : { 'x-cove-init-token': token } });

  before(async () => {
    envd = await startEnvd();
    assert.equal((await envd.init({ defaultUser: 'root' })).status, 204);
    sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
  });
  after(() => envd.stop());

  test('needs the init token, like /init; the access token is not enough', async () => {
    assert.equal((await logs()).status, 401);
    assert.equal((await logs('', 'wrong-token')).status, 403);
    assert.equal((await fetch(`${envd.url}${ENVD_LOGS_PATH}`, { method: 'POST', headers: { 'x-cove-init-token': envd.initToken } })).status, 405);
    const ok = await logs('', envd.initToken);
    assert.equal(ok.status, 200);
    const body = EnvdLogsReply.parse(await ok.json());
    assert.ok(body.entries.some((e) => e.message === 'envd started'));
    assert.ok(body.entries.some((e) => e.message === 'envd initialized'));
  });

  test('/init answers where the ring stood before its own record: a new sandbox\'s logs begin after it', async () => {
    await sbx.commands.run('true pool-canary');
    const before = EnvdLogsReply.parse(await (await logs('', envd.initToken)).json()).next;
    const res = await envd.init({ defaultUser: 'root', timestamp: new Date().toISOString() });
    assert.equal(res.status, 204);
    const seq = res.headers.get(ENVD_INIT_LOG_SEQ_HEADER);
    assert.equal(seq, String(before));
    const r = EnvdLogsReply.parse(await (await logs(`?after=${seq}`, envd.initToken)).json());
    assert.equal(r.entries[0]?.message, 'envd initialized', JSON.stringify(r.entries));
    assert.ok(!JSON.stringify(r.entries).includes('pool-canary'), 'what was recorded before the /init is not after its seq');
  });

  test('bad cursors and limits are 400', async () => {
    for (const q of ['?after=-1', '?after=abc', '?limit=1.5', '?after=1e3']) {
      const res = await logs(q, envd.initToken);
      assert.equal(res.status, 400, q);
      assert.equal(((await res.json()) as { code: number }).code, 400);
    }
    const clamped = EnvdLogsReply.parse(await (await logs('?limit=999999', envd.initToken)).json());
    assert.ok(clamped.entries.length <= 1000);
  });

  test('records process start and end with exit code, never the output', async () => {
    const before = EnvdLogsReply.parse(await (await logs('', envd.initToken)).json()).next;
    await assert.rejects(sbx.commands.run('x=7731; echo out-canary-$x; echo err-canary-$x >&2; exit 4', { cwd: '/tmp' }), CommandExitError);
    const r = EnvdLogsReply.parse(await (await logs(`?after=${before}`, envd.initToken)).json());
    const start = r.entries.find((e) => e.message === 'process started');
    const end = r.entries.find((e) => e.message === 'process ended');
    assert.ok(start && end, JSON.stringify(r.entries));
    assert.equal(start.fields.cmd, '/bin/bash');
    assert.equal(start.fields.cwd, '/tmp');
    assert.equal(start.fields.user, 'root');
    assert.equal(typeof start.fields.pid, 'number');
    assert.equal(end.fields.pid, start.fields.pid);
    assert.equal(end.fields.exitCode, 4);
    assert.equal(end.level, 'warn');
    assert.equal(typeof end.fields.durationMs, 'number');
    assert.match(String(start.fields.args), /echo out-canary-\$x/, 'the command line is recorded');
    assert.ok(!JSON.stringify(r).includes('out-canary-7731') && !JSON.stringify(r).includes('err-canary-7731'), 'no process output in the log');
  });

  test('GET /cove/logs/wait: init token only; held while nothing is new, answered by the next entry', { timeout: 20_000 }, async () => {
    const wait = (q: string, token?: string) =>
      fetch(`${envd.url}${ENVD_LOGS_WAIT_PATH}${q}`, { headers: token === undefined ? {} : { 'x-cove-init-token': token } });
    assert.equal((await wait('?after=0&wait=1000')).status, 401);
    assert.equal((await wait('?after=0&wait=1000', 'wrong-token')).status, 403);
    assert.equal((await wait('?after=0&wait=-1', envd.initToken)).status, 400);
    const last = EnvdLogsReply.parse(await (await logs('', envd.initToken)).json()).next;
    // Nothing new: held to its bound, then the same seq.
    assert.deepEqual(EnvdLogsWaitReply.parse(await (await wait(`?after=${last}&wait=1000`, envd.initToken)).json()), { last });
    // An older cursor: at once.
    assert.deepEqual(EnvdLogsWaitReply.parse(await (await wait(`?after=${last - 1}&wait=30000`, envd.initToken)).json()), { last });
    // Held for up to 30 s (longer than this test may run): only the command's entry can end it.
    const held = wait(`?after=${last}&wait=30000`, envd.initToken);
    await sbx.commands.run('true');
    const r = EnvdLogsWaitReply.parse(await (await held).json());
    assert.ok(r.last > last, `${r.last} > ${last}`);
  });

  test('refused requests are recorded as envd errors', async () => {
    const before = EnvdLogsReply.parse(await (await logs('', envd.initToken)).json()).next;
    assert.equal((await logs('', 'a-wrong-init-token')).status, 403);
    const r = EnvdLogsReply.parse(await (await logs(`?after=${before}`, envd.initToken)).json());
    assert.ok(r.entries.some((e) => e.level === 'warn' && e.fields.status === 403 && e.message === 'invalid init token'), JSON.stringify(r.entries));
  });
});
