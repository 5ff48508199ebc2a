// Issue 11, what must hold over time: sandbox logs outlive a restart of the node the sandbox runs on (what was
// recorded before is still served, once, and new lines arrive after); `e2b sandbox logs --follow` (the unchanged
// CLI as a process) shows a line printed after it started and ends by itself when the sandbox is killed; the
// dedicated build-logs route (through the control plane's redirect) pages by cursor, limit, direction and level
// as E2B's OpenAPI defines them, and refuses bad input with a JSON 400.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Sandbox, Template } from 'e2b';
import { request } from 'undici';
import { deployment, eventually, repoRoot } from './deployment.js';
import { allNodesHealthy, nodeClients, nodeOf } from './nodes.js';

interface LogLine {
  timestamp: string;
  level: string;
  message: string;
  fields: Record<string, string>;
}

/** The sandbox's logs as the SDK's v2 route answers them (fetch follows the control plane's 307). */
async function sandboxLogs(id: string): Promise<LogLine[]> {
  const d = deployment();
  const r = await fetch(`${d.env.E2B_API_URL}/v2/sandboxes/${id}/logs?limit=1000`, { headers: { 'x-api-key': d.env.E2B_API_KEY } });
  assert.equal(r.status, 200, await r.clone().text());
  return ((await r.json()) as { logs: LogLine[] }).logs;
}

const startsOf = (logs: LogLine[], canary: string) => logs.filter((l) => l.message === 'process started' && JSON.stringify(l.fields).includes(canary));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('sandbox logs outlive a restart of the node', () => {
  let sbx: Sandbox | undefined;
  after(async () => {
    await sbx?.kill().catch(() => undefined);
  });

  test('lines recorded before the restart are served after it, once; new lines arrive; the sandbox runs on', { timeout: 300_000 }, async () => {
    const d = deployment();
    const before = `cove-before-${randomBytes(5).toString('hex')}`;
    const afterCanary = `cove-after-${randomBytes(5).toString('hex')}`;
    sbx = await Sandbox.create({ timeoutMs: 300_000 });
    await sbx.commands.run(`true ${before}`);
    await eventually(async () => startsOf(await sandboxLogs(sbx!.sandboxId), before).length > 0, 30_000, 'the first command in the logs');

    // Stop the node the sandbox runs on (SIGTERM: sandboxes are left running) and start it again as `cove up` does.
    const rpcPort = await nodeOf(d, sbx.sandboxId);
    const index = d.nodes.findIndex((n) => n.rpcPort === rpcPort);
    assert.ok(index >= 0, 'the sandbox runs on a node of the deployment');
    const name = index === 0 ? 'orchestrator' : `orchestrator-${index + 1}`;
    const { pid } = JSON.parse(readFileSync(join(d.stateDir, 'run', `${name}.pid`), 'utf8')) as { pid: number };
    process.kill(pid, 'SIGTERM');
    await eventually(() => !alive(pid), 60_000, `${name} (pid ${pid}) to stop`);
    execFileSync(
      process.execPath,
      [join(repoRoot, 'packages/cli/dist/src/main.js'), 'up', '--state-dir', d.stateDir, '--port-offset', '100', '--warm-pool', 'base=2', '--nodes', String(d.nodes.length)],
      { stdio: 'ignore' },
    );
    // `cove up` counts a node ready once the edge lists it healthy, which the stale heartbeats of the stopped
    // process still say: wait for the new process itself, listing the re-adopted sandbox.
    await eventually(async () => (await nodeClients(d, rpcPort!).sandboxes.list({})).sandboxes.some((s) => s.sandboxId === sbx!.sandboxId), 120_000, 'the node to be back with the sandbox');
    await allNodesHealthy(d, 60_000);

    // Nothing running was disturbed: the same sandbox answers, on the same node.
    assert.equal((await sbx.commands.run(`echo ${afterCanary}`)).stdout, `${afterCanary}\n`);
    assert.equal(await nodeOf(d, sbx.sandboxId), rpcPort);
    const logs = await eventually(async () => {
      const l = await sandboxLogs(sbx!.sandboxId);
      return startsOf(l, afterCanary).length > 0 ? l : undefined;
    }, 30_000, 'the command after the restart in the logs');
    assert.equal(startsOf(logs, before).length, 1, 'the line from before the restart is served, and only once (the pull went on from its cursor)');
    assert.equal(logs.filter((l) => l.message === 'envd initialized').length, 1, 'envd\'s init record was not sent again');
  });
});

describe('`e2b sandbox logs --follow` (the unchanged CLI)', () => {
  test('shows a line printed after it started and ends by itself when the sandbox is killed', { timeout: 120_000 }, async () => {
    const d = deployment();
    const canary = `cove-follow-${randomBytes(5).toString('hex')}`;
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    const child = spawn(join(repoRoot, 'node_modules/.bin/e2b'), ['sandbox', 'logs', sbx.sandboxId, '--follow', '--format', 'json'], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, NO_UPDATE_NOTIFIER: '1', NO_COLOR: '1', ...d.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    let killed = false;
    try {
      // It has printed what was there when it started (the sandbox's creation) before the canary runs.
      await eventually(() => out.includes('sandbox created'), 30_000, `the CLI's first page (stdout: ${out}, stderr: ${err})`);
      assert.ok(!out.includes(canary));
      await sbx.commands.run(`true ${canary}`);
      await eventually(() => out.includes(canary), 30_000, `the new line in the followed logs (stdout: ${out})`);
      const line = out.split('\n').find((l) => l.includes(canary))!;
      assert.equal((JSON.parse(line) as { message: string }).message, 'process started');
      await sbx.kill();
      killed = true;
      // A bound, not a synchronisation: the CLI checks the sandbox after every poll (400 ms) and must end on its own.
      let bound: NodeJS.Timeout | undefined;
      const code = await Promise.race([exited, new Promise<string>((r) => (bound = setTimeout(() => r('still running 30 s after the kill'), 30_000)))]);
      clearTimeout(bound);
      assert.equal(code, 0, `the CLI ended cleanly (stderr: ${err})`);
      assert.equal(out.split('\n').filter((l) => l.includes(canary)).length, 1, 'each line is printed once');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      if (!killed) await sbx.kill().catch(() => undefined);
    }
  });
});

describe('GET /templates/{id}/builds/{bid}/logs through the redirect', () => {
  const tag = randomBytes(4).toString('hex');
  const api = async (path: string, key = deployment().env.E2B_API_KEY) => {
    const d = deployment();
    const res = await request(`${d.env.E2B_API_URL}${path}`, { headers: { 'x-api-key': key } });
    return { status: res.statusCode, location: res.headers.location as string | undefined, type: String(res.headers['content-type']), text: await res.body.text() };
  };
  /** Follows the 307 to the cluster and answers the page. */
  const page = async (path: string): Promise<Array<{ timestamp: string; level: string; message: string; step?: string }>> => {
    const d = deployment();
    const r = await fetch(`${d.env.E2B_API_URL}${path}`, { headers: { 'x-api-key': d.env.E2B_API_KEY } });
    const text = await r.text();
    assert.equal(r.status, 200, `${path}: ${text}`);
    return (JSON.parse(text) as { logs: Array<{ timestamp: string; level: string; message: string; step?: string }> }).logs;
  };

  test('cursor, limit, direction and level page the log; bad input is a JSON 400; others get 404', { timeout: 300_000 }, async () => {
    const d = deployment();
    const lines = Array.from({ length: 6 }, (_, i) => `bl-${tag}-${i}`);
    const t = Template()
      .fromTemplate('base')
      .runCmd(`${lines.map((l) => `echo ${l}; sleep 0.05`).join('; ')}; exit 5`);
    const info = await Template.buildInBackground(t, `e2e-blogs-${tag}`, { cpuCount: 1, memoryMB: 512 });
    await eventually(async () => (await Template.getBuildStatus(info)).status === 'error', 240_000, 'the build to fail', 500);
    const base = `/templates/${info.templateId}/builds/${info.buildId}/logs`;
    // These pages come from the cluster's collector, which gathers the node's build log after the fact: the status
    // says error as the node records the failure, and its last entry reaches the collector a moment later.
    await eventually(async () => (await page(`${base}?level=error`)).some((e) => /exit code 5/.test(e.message)), 30_000, 'the failure to reach the log', 200);

    const all = await page(`${base}?limit=100`);
    const printed = all.filter((e) => e.message.startsWith(`bl-${tag}-`)).map((e) => e.message);
    assert.deepEqual(printed, lines, 'every RUN line, in order, forward by default');
    const times = all.map((e) => Date.parse(e.timestamp));
    assert.deepEqual(times, [...times].sort((a, b) => a - b), 'forward is oldest first');
    assert.ok(all.some((e) => e.step !== undefined && e.message === lines[0]), 'RUN output carries its step');

    // limit: a page holds at most that many; more than 100 is clamped in the redirect, not refused.
    assert.equal((await page(`${base}?limit=2`)).length, 2);
    const clamped = await api(`${base}?limit=5000`);
    assert.equal(clamped.status, 307, clamped.text);
    assert.equal(new URL(clamped.location!).searchParams.get('limit'), '100');

    // cursor (ms): forward reads from it; backward reads up to it, newest first.
    const mid = all.find((e) => e.message === lines[3])!;
    const cursor = Date.parse(mid.timestamp);
    const fwd = await page(`${base}?cursor=${cursor}&limit=100`);
    assert.ok(fwd.length > 0 && fwd.every((e) => Date.parse(e.timestamp) >= cursor), JSON.stringify(fwd));
    assert.ok(fwd.some((e) => e.message === lines[5]) && !fwd.some((e) => e.message === lines[0]));
    const back = await page(`${base}?cursor=${cursor}&direction=backward&limit=100`);
    assert.ok(back.length > 0 && back.every((e) => Date.parse(e.timestamp) <= cursor), JSON.stringify(back));
    const backTimes = back.map((e) => Date.parse(e.timestamp));
    assert.deepEqual(backTimes, [...backTimes].sort((a, b) => b - a), 'backward is newest first');
    assert.ok(back.some((e) => e.message === lines[0]) && !back.some((e) => e.message === lines[5]));
    const newest = await page(`${base}?direction=backward&limit=1`);
    assert.deepEqual(newest, [all.at(-1)], 'backward without a cursor starts at the newest');

    // level: that level and above.
    const errors = await page(`${base}?level=error`);
    assert.ok(errors.length > 0 && errors.every((e) => e.level === 'error'), JSON.stringify(errors));
    assert.ok(errors.some((e) => /exit code 5/.test(e.message)));
    const warn = await page(`${base}?level=warn`);
    assert.ok(warn.every((e) => e.level === 'warn' || e.level === 'error') && warn.length >= errors.length);
    assert.equal((await page(`${base}?source=persistent&limit=100`)).length, all.length, 'source is accepted');

    // Bad input: a clear JSON 400 from the control plane, before any redirect.
    for (const [q, what] of [
      ['cursor=yesterday', /cursor must be a non-negative integer/],
      ['cursor=-5', /cursor must be a non-negative integer/],
      ['limit=1.5', /limit must be a non-negative integer/],
      ['limit=-1', /limit must be a non-negative integer/],
      ['direction=sideways', /direction/],
      ['level=loud', /level/],
      ['source=elsewhere', /source/],
      [`cursor=${'9'.repeat(20)}`, /cursor is too large/],
    ] as const) {
      const r = await api(`${base}?${q}`);
      assert.equal(r.status, 400, `${q}: ${r.status} ${r.text}`);
      assert.equal(r.location, undefined);
      assert.match(r.type, /application\/json/);
      const body = JSON.parse(r.text) as { code: number; message: string };
      assert.equal(body.code, 400);
      assert.match(body.message, what, q);
    }

    // A build of another team, an unknown build: 404 without a redirect. A grant opens only its own build.
    const state = JSON.parse(readFileSync(`${d.stateDir}/state.json`, 'utf8')) as { clusterId: string };
    const made = await request(`${d.env.E2B_API_URL}/admin/teams`, {
      method: 'POST',
      headers: { 'x-admin-token': d.secrets.adminToken, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `blogs-other-${tag}`, clusterId: state.clusterId }),
    });
    const other = ((await made.body.json()) as { apiKey: { key: string } }).apiKey.key;
    const foreign = await api(`${base}?limit=5`, other);
    assert.equal(foreign.status, 404, foreign.text);
    assert.equal(foreign.location, undefined);
    const unknown = await api(`/templates/${info.templateId}/builds/${randomBytes(8).toString('hex')}/logs`);
    assert.equal(unknown.status, 404, unknown.text);
    const granted = new URL((await api(`${base}?limit=5`)).location!);
    granted.pathname = granted.pathname.replace(info.buildId, `${info.buildId.slice(0, -1)}x`);
    const elsewhere = await request(granted);
    assert.equal(elsewhere.statusCode, 403, 'the grant does not open another build');
    await elsewhere.body.dump();
  });
});
