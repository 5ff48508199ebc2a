// The code-interpreter server in a real rootfs (no platform), driven by the UNCHANGED
// @e2b/code-interpreter SDK in debug mode, plus raw HTTP for what the SDK would not send.
// Needs root (namespaces, overlay mounts): run under flock /tmp/cove-heavy.lock.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { NotFoundError, Sandbox, SandboxError, TimeoutError, type Context } from '@e2b/code-interpreter';
import { BASE_URL, startGuest, type Guest } from './guest.js';

process.env.E2B_DEBUG = 'true';

const OUTPUT_BOUND = 4 * 1024 * 1024;
const GLOBAL_ENVS = { COVE_GLOBAL: 'from-envd', COVE_SHADOWED: 'global-value' };

let guest: Guest;
let sbx: Sandbox;
let fakeEnvd: Server;

/** Stands in for envd's GET /envs (what Sandbox.create's envs would be); same network as the guest. */
async function startFakeEnvd(): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/envs') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(GLOBAL_ENVS));
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`port 49983 (envd's) is busy on this machine: ${err.message}`)));
    server.listen(49983, '127.0.0.1', () => resolve());
  });
  return server;
}

async function post(path: string, body: string | object): Promise<{ status: number; type: string; text: string }> {
  const res = await fetch(`${BASE_URL}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
}

describe('code-interpreter server (unchanged SDK, debug mode)', () => {
  before(async () => {
    fakeEnvd = await startFakeEnvd();
    // The output bound and the keep-alive period scaled down (production: 32 MiB, 5 s) so the flood and the quiet
    // cell below take seconds; what they prove does not depend on the figures.
    guest = await startGuest({ COVE_CI_MAX_OUTPUT_BYTES: String(OUTPUT_BOUND), COVE_CI_KEEPALIVE_S: '1' });
    sbx = await Sandbox.create();
  });

  after(async () => {
    await guest?.stop();
    await new Promise((r) => fakeEnvd?.close(r));
  });

  it('lists the python and javascript defaults first; a new context is listed last, as created', async () => {
    const list = await sbx.listCodeContexts();
    assert.deepEqual(list.slice(0, 2).map((c) => c.language), ['python', 'javascript']);
    const ctx = await sbx.createCodeContext({ cwd: '/root', language: 'python' });
    const after = await sbx.listCodeContexts();
    assert.deepEqual(after[after.length - 1], { id: ctx.id, language: 'python', cwd: '/root' });
    await sbx.removeCodeContext(ctx);
    assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id));
  });

  it('keeps state across cells; setup cells do not count as executions', async () => {
    const ctx = await sbx.createCodeContext();
    const a = await sbx.runCode('x = 1; x', { context: ctx, envs: { A: 'b' } });
    assert.equal(a.text, '1');
    const b = await sbx.runCode('x += 1; x', { context: ctx });
    assert.equal(b.text, '2');
    assert.equal(b.executionCount, 2);
    await sbx.removeCodeContext(ctx);
  });

  it('calls onStdout/onStderr in the order the cell wrote', async () => {
    const seen: string[] = [];
    const exec = await sbx.runCode(
      'import sys\nprint("one", flush=True)\nprint("two", file=sys.stderr, flush=True)\nprint("three", flush=True)',
      { onStdout: (m) => { seen.push(`out:${m.line}`); }, onStderr: (m) => { seen.push(`err:${m.line}`); } },
    );
    assert.deepEqual(seen, ['out:one\n', 'err:two\n', 'out:three\n']);
    assert.deepEqual(exec.logs.stdout, ['one\n', 'three\n']);
    assert.deepEqual(exec.logs.stderr, ['two\n']);
  });

  it('gives ZeroDivisionError with its traceback in-band, onError once', async () => {
    let errors = 0;
    const exec = await sbx.runCode('1/0', { onError: () => { errors++; } });
    assert.equal(exec.error?.name, 'ZeroDivisionError');
    assert.equal(exec.error?.value, 'division by zero');
    assert.match(exec.error?.traceback ?? '', /----> 1 1\/0/);
    assert.doesNotMatch(exec.error?.traceback ?? '', /\x1b\[/);
    assert.equal(errors, 1);
    const nameErr = await sbx.runCode('xyz_undefined');
    assert.equal(nameErr.error?.name, 'NameError');
  });

  it('a cell right after an error runs, however long the kernel keeps aborting after it', async () => {
    // ipykernel aborts execute requests that reach it within stop_on_error_timeout of a failed cell (0 s by
    // default, a race under load that once returned an empty result in CI). A kernel started with a 3 s window
    // makes that race certain: the run after the error must still give its value.
    const config = '~/.ipython/profile_default/ipython_kernel_config.py';
    const write = await sbx.runCode(
      `import os\np = os.path.expanduser("${config}")\nos.makedirs(os.path.dirname(p), exist_ok=True)\n` +
        'open(p, "w").write("c.Kernel.stop_on_error_timeout = 3.0\\n")',
    );
    assert.equal(write.error, undefined, write.error?.traceback);
    const ctx = await sbx.createCodeContext({ language: 'python' });
    try {
      await sbx.runCode(`import os; os.remove(os.path.expanduser("${config}"))`);
      assert.equal((await sbx.runCode('raise ValueError("first")', { context: ctx })).error?.name, 'ValueError');
      const next = await sbx.runCode('1 + 1', { context: ctx });
      assert.equal(next.text, '2', JSON.stringify({ error: next.error, logs: next.logs }));
    } finally {
      await sbx.removeCodeContext(ctx);
    }
  });

  it('returns list/dict results as json and DataFrames as data', async () => {
    const j = await sbx.runCode('[1, {"a": "é"}]');
    assert.deepEqual(j.results[0].json as unknown, [1, { a: 'é' }]);
    const df = await sbx.runCode('import pandas as pd\npd.DataFrame({"n": [1, 2], "t": pd.to_datetime(["2024-01-01", "2024-01-02"])})');
    const data = df.results[0].data as Record<string, unknown[]>;
    assert.deepEqual(data.n, [1, 2]);
    assert.match(String(data.t[0]), /^2024-01-01T00:00:00/);
  });

  it('displays a PIL image that is shown, saved or returned as png', async () => {
    const exec = await sbx.runCode(
      'from PIL import Image\nimg = Image.new("RGB", (8, 8), "red")\nimg.show()\nimg.save("/tmp/red.png")\nimg',
    );
    assert.equal(exec.error, undefined, exec.error?.traceback);
    assert.equal(exec.results.length, 3);
    assert.ok(exec.results.every((r) => r.png && Buffer.from(r.png, 'base64').subarray(1, 4).toString() === 'PNG'));
    // matplotlib's savefig saves through PIL: that is not the user showing an image.
    const saved = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig("/tmp/fig.png")\nplt.close()');
    assert.deepEqual(saved.results, []);
  });

  it('gives a matplotlib figure as png plus line chart data, and a final value as a second result', async () => {
    const results: unknown[] = [];
    const exec = await sbx.runCode(
      [
        'import matplotlib.pyplot as plt',
        'plt.figure()',
        'plt.plot([1, 2, 3], [2, 4, 8], label="growth")',
        'plt.title("Growth"); plt.xlabel("Time (s)"); plt.ylabel("Amplitude (Hz)")',
        'plt.show()',
        '42',
      ].join('\n'),
      { onResult: (r) => { results.push(r); } },
    );
    assert.equal(results.length, 2);
    const fig = exec.results[0];
    assert.ok(fig.png && Buffer.from(fig.png, 'base64').subarray(1, 4).toString() === 'PNG');
    assert.match(fig.text ?? '', /^<Figure size/);
    assert.deepEqual(fig.extra, {});
    const chart = fig.chart as any;
    assert.equal(chart.type, 'line');
    assert.equal(chart.title, 'Growth');
    assert.equal(chart.x_unit, 's');
    assert.equal(chart.y_unit, 'Hz');
    assert.equal(chart.elements[0].label, 'growth');
    assert.deepEqual(chart.elements[0].points, [[1, 2], [2, 4], [3, 8]]);
    assert.equal(exec.text, '42');
  });

  it('extracts bar, pie, box-and-whisker, log/categorical scales and superchart data', async () => {
    const chartOf = async (code: string) => {
      const exec = await sbx.runCode(`import matplotlib.pyplot as plt\nplt.figure()\n${code}\nplt.show()`);
      assert.equal(exec.error, undefined, exec.error?.traceback);
      return exec.results[0].chart as any;
    };
    const bar = await chartOf('plt.bar(["A", "B", "C", "D"], [100, 200, 300, 400], label="Books Sold")');
    assert.equal(bar.type, 'bar');
    assert.deepEqual(bar.elements.map((e: any) => e.value), [100, 200, 300, 400]);
    assert.deepEqual(bar.elements.map((e: any) => e.label), ['A', 'B', 'C', 'D']);
    assert.ok(bar.elements.every((e: any) => e.group === 'Books Sold'));

    const pie = await chartOf('plt.pie([90, 10], labels=["big", "small"])');
    assert.equal(pie.type, 'pie');
    assert.deepEqual(pie.elements.map((e: any) => [e.label, e.angle, e.radius]), [['big', 324, 1], ['small', 36, 1]]);

    const box = await chartOf(
      'plt.boxplot([[78, 85, 88, 90, 92], [40, 84, 85, 88, 90, 91, 95], [75, 79, 82, 86, 88]], patch_artist=True, labels=["A", "B", "C"])',
    );
    assert.equal(box.type, 'box_and_whisker');
    assert.deepEqual(box.elements[0], { label: 'A', min: 78, first_quartile: 85, median: 88, third_quartile: 90, max: 92, outliers: [] });
    assert.deepEqual(box.elements[1].outliers, [40]);
    assert.deepEqual(box.elements[2], { label: 'C', min: 75, first_quartile: 79, median: 82, third_quartile: 86, max: 88, outliers: [] });

    const log = await chartOf('plt.plot([1, 2, 3], [10, 100, 1000]); plt.yscale("log"); plt.ylabel("Values (log scale)")');
    assert.equal(log.y_scale, 'log');
    assert.equal(log.y_unit, 'log scale');
    const cat = await chartOf('plt.plot([1, 2, 3], ["low", "mid", "high"])');
    assert.equal(cat.y_scale, 'categorical');

    const dated = await chartOf('import datetime as dt\nplt.plot([dt.datetime(2024, 1, d) for d in (1, 2, 3)], [1, 2, 3])');
    assert.equal(dated.x_scale, 'datetime');
    assert.match(dated.elements[0].points[0][0], /^2024-01-01T00:00:00/);

    const exec = await sbx.runCode(
      'import matplotlib.pyplot as plt\nfig, (a, b) = plt.subplots(1, 2)\na.plot([1, 2], [3, 4])\nb.scatter([1, 2], [3, 4])\nfig.suptitle("Both")\nplt.show()',
    );
    const sup = exec.results[0].chart as any;
    assert.equal(sup.type, 'superchart');
    assert.equal(sup.title, 'Both');
    assert.deepEqual(sup.elements.map((e: any) => e.type), ['line', 'scatter']);
    assert.deepEqual(sup.elements[1].elements[0].points, [[1, 3], [2, 4]]);

    const unknown = await chartOf('plt.imshow([[1, 2], [3, 4]])');
    assert.equal(unknown.type, 'unknown');
    assert.deepEqual(unknown.elements, []);
  });

  it('runs JavaScript and TypeScript cells: import, top-level await, annotations, state', async () => {
    const cwd = await sbx.runCode('process.cwd()', { language: 'js' });
    assert.equal(cwd.text, '/home/user');
    const awaited = await sbx.runCode(
      "import { setTimeout as wait } from 'node:timers/promises'\nconst greeting = await wait(10, 'Hello World!')\ngreeting",
      { language: 'javascript' },
    );
    assert.equal(awaited.error, undefined, awaited.error?.traceback);
    assert.equal(awaited.text, 'Hello World!');
    const again = await sbx.runCode('greeting.length', { language: 'javascript' });
    assert.equal(again.text, '12');
    const ts = await sbx.runCode(
      'interface P { n: number }\nfunction double(p: P): number { return p.n * 2 }\nconst out: number = double({ n: 21 });\nconsole.log("typed", out)\nout',
      { language: 'ts' },
    );
    assert.equal(ts.error, undefined, ts.error?.traceback);
    assert.deepEqual(ts.logs.stdout, ['typed 42\n']);
    assert.equal(ts.text, '42');
    const thrown = await sbx.runCode('throw new RangeError("nope")', { language: 'js' });
    assert.equal(thrown.error?.name, 'RangeError');
    assert.equal(thrown.error?.value, 'nope');
  });

  it('restarts a JavaScript context, and survives a cell that ends the Node runtime', async () => {
    const ctx = await sbx.createCodeContext({ language: 'typescript' });
    assert.equal(ctx.language, 'typescript');
    await sbx.runCode('const kept = 5', { context: ctx });
    assert.equal((await sbx.runCode('kept * 2', { context: ctx })).text, '10');
    await sbx.restartCodeContext(ctx);
    assert.equal((await sbx.runCode('typeof kept', { context: ctx })).text, 'undefined');
    const exited = await sbx.runCode('process.exit(3)', { context: ctx });
    assert.equal(exited.error?.name, 'ContextRestarting');
    assert.equal((await sbx.runCode('1 + 1', { context: ctx, timeoutMs: 10_000 })).text, '2');
    await sbx.removeCodeContext(ctx);
  });

  it('runs R and bash cells in the home directory', async () => {
    const r = await sbx.runCode('getwd()', { language: 'r' });
    assert.equal(r.error, undefined, r.error?.traceback);
    assert.equal(r.results[0].text, '[1] "/home/user"');
    const bash = await sbx.runCode('X=41; echo $((X + 1)); pwd; echo oops >&2', { language: 'bash' });
    assert.deepEqual(bash.logs.stdout.join(''), '42\n/home/user\n');
    assert.deepEqual(bash.logs.stderr.join(''), 'oops\n');
    const state = await sbx.runCode('echo $X', { language: 'bash' });
    assert.equal(state.logs.stdout.join(''), '41\n');
  });

  it('keeps contexts apart; restart clears state; a removed context is not found', async () => {
    const a = await sbx.createCodeContext({ language: 'python' });
    const b = await sbx.createCodeContext({ language: 'python' });
    await sbx.runCode('secret = 7', { context: a });
    assert.equal((await sbx.runCode('secret', { context: b })).error?.name, 'NameError');
    assert.equal((await sbx.runCode('secret', { context: a })).text, '7');
    await sbx.restartCodeContext(a);
    assert.equal((await sbx.runCode('secret', { context: a })).error?.name, 'NameError');
    await sbx.removeCodeContext(b);
    await assert.rejects(sbx.runCode('1', { context: b }), NotFoundError);
    await assert.rejects(sbx.restartCodeContext(b), NotFoundError);
    await assert.rejects(sbx.removeCodeContext(b), NotFoundError);
    const unknown: Context = { id: 'no-such-context', language: 'python', cwd: '/home/user' };
    await assert.rejects(sbx.runCode('1', { context: unknown }), NotFoundError);
    await sbx.removeCodeContext(a);
  });

  it('ends a running cell with ContextRestarting when its context is restarted', async () => {
    const ctx = await sbx.createCodeContext();
    let started!: () => void;
    const isRunning = new Promise<void>((r) => { started = r; });
    const running = sbx.runCode('import time\nprint("started", flush=True)\ntime.sleep(60)', {
      context: ctx, timeoutMs: 30_000, onStdout: () => started(),
    });
    await isRunning;
    await sbx.restartCodeContext(ctx);
    const exec = await running;
    assert.equal(exec.error?.name, 'ContextRestarting');
    assert.equal((await sbx.runCode('2 + 2', { context: ctx, timeoutMs: 10_000 })).text, '4');
    await sbx.removeCodeContext(ctx);
  });

  it('applies global envs (from envd) and per-run envs, then restores them, in every language', async () => {
    const cases: Array<[string, (k: string) => string]> = [
      ['python', (k) => `import os; print(os.environ.get("${k}"))`],
      ['javascript', (k) => `console.log(process.env.${k} ?? "None")`],
      ['bash', (k) => `echo \${${k}:-None}`],
      ['r', (k) => `cat(Sys.getenv("${k}", "None"), "\\n", sep = "")`],
    ];
    for (const [language, read] of cases) {
      const ctx = await sbx.createCodeContext({ language });
      const out = async (k: string, envs?: Record<string, string>) =>
        (await sbx.runCode(read(k), { context: ctx, envs })).logs.stdout.join('').trim();
      assert.equal(await out('COVE_GLOBAL'), 'from-envd', language);
      assert.equal(await out('COVE_RUN', { COVE_RUN: "it's \"quoted\" $HOME" }), "it's \"quoted\" $HOME", language);
      assert.equal(await out('COVE_RUN'), 'None', `${language}: a per-run env leaked into the next run`);
      assert.equal(await out('COVE_SHADOWED', { COVE_SHADOWED: 'run-value' }), 'run-value', language);
      assert.equal(await out('COVE_SHADOWED'), 'global-value', `${language}: the global value was not restored`);
      await sbx.removeCodeContext(ctx);
    }
  });

  it('streams output of a long cell before it ends, with keepalives while it is quiet', async () => {
    const started = Date.now();
    let firstAt = 0;
    await sbx.runCode('import time\nprint("early", flush=True)\ntime.sleep(2)\nprint("late")', {
      onStdout: () => { if (!firstAt) firstAt = Date.now(); },
    });
    const ended = Date.now();
    assert.ok(firstAt > 0 && ended - firstAt >= 1500, `first output ${firstAt - started} ms after start, end at ${ended - started} ms`);

    const res = await fetch(`${BASE_URL}/execute`, { method: 'POST', body: JSON.stringify({ code: 'import time; time.sleep(2.5)' }) });
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.some((l) => l.type === 'keepalive'), JSON.stringify(lines));
    assert.equal(lines[lines.length - 1].type, 'end_of_execution');
  });

  it('times out a never-ending cell, interrupts it, and the context is usable again', async () => {
    await assert.rejects(
      sbx.runCode('import time\nwhile True: time.sleep(1)', { timeoutMs: 2000, envs: { COVE_TIMED_OUT: 'set' } }),
      TimeoutError,
    );
    const started = Date.now();
    const next = await sbx.runCode('import os\nos.environ.get("COVE_TIMED_OUT", "unset")', { timeoutMs: 10_000 });
    assert.equal(next.text, 'unset', 'the per-run env of a run whose client left must be restored too');
    assert.ok(Date.now() - started < 10_000);
    // JavaScript: a synchronous endless loop is interrupted too.
    await assert.rejects(sbx.runCode('while (true) {}', { language: 'js', timeoutMs: 2000 }), TimeoutError);
    assert.equal((await sbx.runCode('1 + 2', { language: 'js', timeoutMs: 10_000 })).text, '3');
    await assert.rejects(sbx.runCode('sleep 600', { language: 'bash', timeoutMs: 2000 }), TimeoutError);
    assert.equal((await sbx.runCode('echo back', { language: 'bash', timeoutMs: 10_000 })).logs.stdout.join(''), 'back\n');
  });

  it('bounds an output flood: the cell is cut with a clear error, the server and context survive', async () => {
    for (const [language, code] of [
      ['python', 'while True: print("x" * 10000)'],
      ['javascript', 'while (true) console.log("x".repeat(10000))'],
    ]) {
      const exec = await sbx.runCode(code, { language, timeoutMs: 60_000 });
      assert.equal(exec.error?.name, 'OutputLimitExceeded', `${language}: ${JSON.stringify(exec.error)}`);
      const total = exec.logs.stdout.reduce((n, s) => n + s.length, 0);
      assert.ok(total <= OUTPUT_BOUND + 1024 * 1024, `${language}: ${total} bytes streamed`);
      assert.equal((await sbx.runCode('6 * 7', { language, timeoutMs: 10_000 })).text, '42', language);
    }
    assert.equal((await fetch(`${BASE_URL}/health`)).status, 200);
  });

  it('refuses bad input clearly', async () => {
    // Unknown language: 400 plain text (the SDK: SandboxError).
    const unknown = await post('/execute', { code: '1', language: 'cobol' });
    assert.equal(unknown.status, 400);
    assert.match(unknown.text, /Unknown language 'cobol'/);
    await assert.rejects(sbx.runCode('1', { language: 'cobol' }), SandboxError);
    // Java: not in this template.
    const java = await post('/execute', { code: '1', language: 'java' });
    assert.equal(java.status, 500);
    assert.match(java.text, /Java is not available in this template/);
    assert.equal((await post('/contexts', { language: 'java' })).status, 500);
    // Both language and context.
    const both = await post('/execute', { code: '1', language: 'python', context_id: 'x' });
    assert.equal(both.status, 400);
    // The SDK's ?source= query is ignored.
    const sourced = await post('/execute?source=ci', { code: '"q"' });
    assert.equal(sourced.status, 200);
    assert.match(sourced.text, /"text": "q"/);
    // Unknown context.
    const missing = await post('/execute', { code: '1', context_id: 'nope' });
    assert.equal(missing.status, 404);
    assert.equal(missing.text, 'Context nope not found');
    // Not JSON, not an object, no code, wrong types: FastAPI-shaped 422 JSON.
    for (const body of ['{not json', '[1]', '{}', '{"code": 1}', '{"code": "1", "env_vars": {"A": 1}}']) {
      const r = await post('/execute', body);
      assert.equal(r.status, 422, body);
      assert.match(r.type, /application\/json/);
      assert.ok(Array.isArray(JSON.parse(r.text).detail), body);
    }
    assert.deepEqual(JSON.parse((await post('/execute', '{}')).text).detail[0].loc, ['body', 'code']);
    // 10 MB of code: 413 JSON, nothing run, and the SDK reports it.
    const huge = 'x = 1\n'.repeat((10 * 1024 * 1024) / 6);
    const big = await post('/execute', { code: huge });
    assert.equal(big.status, 413);
    assert.match(JSON.parse(big.text).detail, /larger than/);
    await assert.rejects(sbx.runCode(huge), (err: Error) => err instanceof SandboxError && /413/.test(err.message));
    assert.equal((await sbx.runCode('"still here"')).text, 'still here');
  });
});
