// Issue 11 with real data: the collector gathers what envd records and the sandbox's resource samples, and the
// unchanged SDK and CLI read them through the control plane's redirect — metrics during a CPU-busy command,
// `e2b sandbox logs` showing the sandbox's process starts and ends, `e2b sandbox metrics`, logs still readable
// after the sandbox is killed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Sandbox } from 'e2b';
import { request } from 'undici';
import { deployment, eventually, repoRoot } from './deployment.js';

const e2b = join(repoRoot, 'node_modules/.bin/e2b');

function cli(...args: string[]): Promise<string> {
  const d = deployment();
  return new Promise((resolve, reject) => {
    const child = spawn(e2b, args, {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, NO_UPDATE_NOTIFIER: '1', NO_COLOR: '1', ...d.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`e2b ${args.join(' ')} exited ${code}: ${out}`))));
  });
}

/** When `pid` started, in ms since the epoch: the boot time plus its start in clock ticks (USER_HZ, 100 on Linux). */
function processStartMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  const bootSeconds = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))![1]);
  return bootSeconds * 1000 + startTicks * 10;
}

/**
 * The keys a JSON object line names more than once at its top level. JSON.parse keeps the last silently; a log
 * pipeline may keep the first, reject the line or keep both, so a field bound twice is a field some reader gets wrong.
 */
function repeatedKeys(line: string): string[] {
  const seen = new Set<string>();
  const repeated: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') {
      let j = i + 1;
      while (j < line.length && line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      if (j >= line.length) break; // a cut line: what it named so far is all there is
      if (depth === 1 && expectKey) {
        const key = JSON.parse(line.slice(i, j + 1)) as string;
        if (seen.has(key)) repeated.push(key);
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return repeated;
}

describe('observability with the collector: the SDK and CLI read sandbox logs and metrics', () => {
  const canary = `cove-obs-${randomBytes(5).toString('hex')}`;
  let sbx: Sandbox;

  before(async () => {
    deployment();
    sbx = await Sandbox.create({ timeoutMs: 300_000 });
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
  });

  test('getMetrics shows CPU use while a command keeps a core busy, with the sandbox\'s totals', { timeout: 90_000 }, async () => {
    await sbx.commands.run('timeout 20 sh -c "while :; do :; done"', { background: true });
    const busy = await eventually(async () => {
      const samples = await sbx.getMetrics();
      return samples.find((s) => s.cpuUsedPct > 20);
    }, 60_000, 'a metrics sample with the busy core');
    assert.ok(busy.cpuCount >= 1);
    assert.ok(busy.memTotal > 0 && busy.memUsed > 0 && busy.memUsed <= busy.memTotal, JSON.stringify(busy));
    assert.ok(busy.diskTotal > 0 && busy.diskUsed > 0, JSON.stringify(busy));
    const windowed = await Sandbox.getMetrics(sbx.sandboxId, { start: new Date(Date.now() - 5 * 60_000), end: new Date() });
    assert.ok(windowed.length > 0, 'a start/end window answers too');
  });

  const parse = (out: string) => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

  test('`e2b sandbox logs` shows the process starts and ends envd recorded; `e2b sandbox metrics` prints samples', { timeout: 90_000 }, async () => {
    await sbx.commands.run(`echo ${canary}; exit 0`);
    await sbx.commands.run(`sh -c 'exit 3' # ${canary}`).catch(() => undefined);
    const logs = await eventually(async () => {
      const out = await cli('sandbox', 'logs', sbx.sandboxId, '--format', 'json');
      // The failing command's end, not just any: the busy loop's ended too, and the canary's start can come in one
      // pull and the end of `exit 3` in the next.
      return out.includes(canary) && parse(out).some((l) => l['message'] === 'process ended' && String(l['exitCode']) === '3') ? out : undefined;
    }, 30_000, 'the canary command in the sandbox logs');
    const lines = parse(logs);
    assert.ok(lines.some((l) => l['message'] === 'process started' && JSON.stringify(l).includes(canary)), 'the start of the canary command');
    // (v1 lines carry the record's fields as strings, as E2B's do.)
    assert.ok(lines.some((l) => l['message'] === 'process ended' && String(l['exitCode']) === '3'), `the end of the failing command, with its exit code: ${logs}`);
    assert.ok(!logs.includes(`${canary}\n`) || lines.every((l) => l['message'] !== canary), 'a command\'s output is not a log line');
    const warn = await cli('sandbox', 'logs', sbx.sandboxId, '--level', 'WARN', '--format', 'json');
    assert.ok(!/"level":"INFO"/.test(warn), '--level WARN hides info lines');
    const metrics = await cli('sandbox', 'metrics', sbx.sandboxId);
    assert.match(metrics, /CPU:\s+[\d.]+% \/\s+\d+ Core/);
  });

  test('logs stay readable after the sandbox is killed; an unknown sandbox is 404', { timeout: 60_000 }, async () => {
    const d = deployment();
    const id = sbx.sandboxId;
    await sbx.kill();
    const res = await eventually(async () => {
      const r = await fetch(`${d.env.E2B_API_URL}/v2/sandboxes/${id}/logs?limit=1000`, { headers: { 'x-api-key': d.env.E2B_API_KEY } });
      const body = (await r.json()) as { logs: Array<{ message: string; fields: Record<string, string> }> };
      return r.status === 200 && body.logs.some((l) => l.message === 'sandbox killed') ? body : undefined;
    }, 30_000, 'the killed sandbox\'s logs, with its end');
    assert.ok(res.logs.some((l) => JSON.stringify(l).includes(canary)));
    // The logs begin at the sandbox's creation: nothing its pooled slot did before the claim (envd's start, the
    // pool's warm-up command, an /init of the pool's) is the sandbox's.
    const messages = res.logs.map((l) => l.message);
    assert.ok(!messages.includes('envd started'), JSON.stringify(messages));
    assert.equal(messages.filter((m) => m === 'envd initialized').length, 1);
    const starts = res.logs.filter((l) => l.message === 'process started').map((l) => JSON.stringify(l.fields));
    assert.equal(starts.length, 3, starts.join('\n'));
    assert.ok(starts.every((f) => f.includes(canary) || f.includes('while :')), `a process this sandbox never ran: ${starts.join('\n')}`);
    // A well-formed id no sandbox ever had.
    const unknownId = `i${randomBytes(10).toString('hex')}`;
    const unknown = await request(`${d.env.E2B_API_URL}/v2/sandboxes/${unknownId}/logs`, { headers: { 'x-api-key': d.env.E2B_API_KEY } });
    assert.equal(unknown.statusCode, 404);
    await unknown.body.dump();
  });

  test('the deployment\'s own log lines name their component, and each field once', async () => {
    const { stateDir } = deployment();
    const dir = join(stateDir, 'logs');
    const files = (await readdir(dir)).filter((f) => /^(control-plane|edge|collector|orchestrator(-\d+)?)\.log$/.test(f));
    assert.ok(files.includes('orchestrator.log') && files.includes('edge.log'), `the components' logs: ${files.join(', ')}`);
    const bad: string[] = [];
    for (const f of files) {
      const name = f.slice(0, -'.log'.length);
      // A log is appended to across restarts: judged are the lines of the process running now (a second of slack
      // for the boot time's resolution), not those an earlier build left.
      const { pid } = JSON.parse(await readFile(join(stateDir, 'run', `${name}.pid`), 'utf8')) as { pid: number };
      const since = processStartMs(pid) - 1000;
      // `component` is the deployable, as on its metrics; a part of it is `module`.
      const component = name.replace(/-\d+$/, '');
      const text = await readFile(join(dir, f), 'utf8');
      // Whole lines only: the component may be writing its last one while this reads.
      for (const line of text.slice(0, text.lastIndexOf('\n') + 1).split('\n')) {
        if (!line.startsWith('{')) continue;
        const rec = JSON.parse(line) as { component?: unknown; time?: unknown };
        if (typeof rec.time !== 'number' || rec.time < since) continue;
        const keys = repeatedKeys(line);
        if (keys.length) bad.push(`${f}: ${keys.join(', ')} twice in ${line.slice(0, 300)}`);
        else if (rec.component !== component) bad.push(`${f}: not component ${component}: ${line.slice(0, 300)}`);
      }
    }
    assert.deepEqual(bad.slice(0, 5), []);
  });
});
