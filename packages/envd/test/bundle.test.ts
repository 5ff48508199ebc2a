import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cp, readFile, stat, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Process } from '@cove/contracts/envd/process';
import { Sandbox } from 'e2b';
import { ENVD_BOOT, ENVD_CODE_CACHE, ENVD_NODE_FLAGS, ENVD_RUNTIME_ENV, ENVD_START, ENVD_WRITE_CODE_CACHE_ENV } from '@cove/contracts/sandbox';
import { startEnvd, tempDir, type RunningEnvd } from './envd-process.js';

const BUNDLE = fileURLToPath(new URL('../bundle', import.meta.url));
const built = await stat(`${BUNDLE}/envd.cjs`).then(() => true, () => false);

// The orchestrator runs the bundle from a read-only mount with these flags (docs/decisions.md, envd).
const FLAGS = [...ENVD_NODE_FLAGS];

/** The launcher's cache-making run, as the node host does it (the orchestrator's envd-install.ts): the cache from fd 3. */
function makeCache(dir: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...FLAGS, `${dir}/${ENVD_START}`], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', [ENVD_WRITE_CODE_CACHE_ENV]: '1', ENVD_LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'ignore', 'inherit', 'pipe'],
    });
    const chunks: Buffer[] = [];
    child.stdio[3]!.on('data', (d: Buffer) => chunks.push(d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`cache run exited ${code}`))));
  });
}

/** The "envd listening" record's codeCache: how that start was compiled. */
function codeCacheOf(e: RunningEnvd): string | undefined {
  for (const line of e.logs) {
    try {
      const rec = JSON.parse(line) as { msg?: string; codeCache?: string };
      if (rec.msg === 'envd listening') return rec.codeCache;
    } catch {
      // not JSON
    }
  }
  return undefined;
}

describe('bundle (npm run bundle -w @cove/envd) is self-contained', { skip: built ? false : 'run `npm run bundle -w @cove/envd` first' }, () => {
  let envd: RunningEnvd;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let sbx: Sandbox;

  before(async () => {
    tmp = await tempDir();
    // A copy outside the repository: nothing may resolve from the workspace's node_modules.
    await cp(BUNDLE, `${tmp.dir}/envd`, { recursive: true });
    // Through envd-boot, as a slot starts it.
    envd = await startEnvd({ ...ENVD_RUNTIME_ENV }, { entry: `${tmp.dir}/envd/${ENVD_START}`, nodeFlags: FLAGS, wrap: [`${tmp.dir}/envd/${ENVD_BOOT}`] });
    assert.equal((await envd.init({ defaultUser: 'root' })).status, 204);
    sbx = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
  });
  after(async () => {
    await envd?.stop();
    await tmp.cleanup();
  });

  test('commands, PTY (node-pty) and metadata (fs-xattr) work from the bundle', async () => {
    assert.equal((await sbx.commands.run('echo bundled')).stdout, 'bundled\n');
    let out = '';
    const h = await sbx.pty.create({ cols: 100, rows: 33, onData: (d) => void (out += Buffer.from(d).toString()) });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size; exit\n'));
    await h.wait().catch(() => undefined);
    assert.match(out, /33 100/);
    await sbx.files.write(`${tmp.dir}/m.txt`, 'x', { metadata: { k: 'v' } });
    assert.deepEqual((await sbx.files.getInfo(`${tmp.dir}/m.txt`)).metadata, { k: 'v' });
  });

  test("a command's environment has none of envd's own (its runtime settings, port and init token)", async () => {
    const env = (await sbx.commands.run('env')).stdout;
    for (const k of [...Object.keys(ENVD_RUNTIME_ENV), 'ENVD_PORT', 'COVE_ENVD_INIT_TOKEN']) assert.doesNotMatch(env, new RegExp(`^${k}=`, 'm'), k);
    assert.match(env, /^HOME=\/root$/m);
  });

  test("envd-boot's library reaches envd's node only: a command has no LD_PRELOAD, no memfd mapped or open", async () => {
    assert.match(await readFile(`/proc/${envd.proc.pid}/maps`, 'utf8'), /\/memfd:cove-mmap-hints/);
    const r = await sbx.commands.run('env; cat /proc/$$/maps; ls -l /proc/$$/fd/');
    assert.doesNotMatch(r.stdout, /LD_PRELOAD|cove-mmap-hints|memfd/);
  });

  test('the launcher is its own few lines: every envd start compiles it without a cache, so it bundles no package', async () => {
    const launcher = await readFile(`${tmp.dir}/envd/${ENVD_START}`, 'utf8');
    assert.ok(launcher.length < 4096, `${ENVD_START} is ${launcher.length} bytes`);
    assert.doesNotMatch(launcher, /Zod/);
  });

  test('every command starts through envd-exec: its OOM score is raised from its first instruction, pipes and PTY', async () => {
    // Written from envd after spawn returned (i.e. after exec), the score left a window in which a command, or
    // anything it forked, still ran at envd's 0; 40 at once made it show in 11 runs of 12 (docs/decisions.md).
    await writeFile(`/proc/${envd.proc.pid}/oom_score_adj`, '0');
    const outs = await Promise.all(
      Array.from({ length: 40 }, () => sbx.commands.run('cat /proc/self/oom_score_adj').then((r) => r.stdout.trim())),
    );
    assert.deepEqual(outs.filter((o) => o !== '100'), []);
    let pty = '';
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (pty += Buffer.from(d).toString()) });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('cat /proc/$$/oom_score_adj /proc/$$/cmdline | tr "\\0" " "; exit\n'));
    await term.wait().catch(() => undefined);
    // The PTY's shell became itself: envd-exec leaves nothing behind in its argv.
    assert.match(pty, /^100\r?\n\/bin\/bash -i -l /m);
    assert.equal((await readFile(`/proc/${envd.proc.pid}/oom_score_adj`, 'utf8')).trim(), '0');
  });

  test("a command the kernel cannot run fails as a shell's would: 127 or 126 with the reason; a script without #! runs in sh", async () => {
    await writeFile(`${tmp.dir}/no-interp`, '#!/nonexistent/interpreter\n', { mode: 0o755 });
    await writeFile(`${tmp.dir}/no-shebang`, 'echo "ran in sh: $0 $1"\n', { mode: 0o755 });
    // Straight through the Process service: the SDK's commands.run would go through bash, which reports it itself.
    const client = createClient(Process, createConnectTransport({ baseUrl: envd.url, httpVersion: '1.1' }));
    const run = async (cmd: string, args: string[]): Promise<{ out: string; err: string; exitCode?: number }> => {
      const r: { out: string; err: string; exitCode?: number } = { out: '', err: '' };
      for await (const m of client.start({ process: { cmd, args } })) {
        const ev = m.event?.event;
        if (ev?.case === 'data' && ev.value.output.case === 'stdout') r.out += Buffer.from(ev.value.output.value).toString();
        if (ev?.case === 'data' && ev.value.output.case === 'stderr') r.err += Buffer.from(ev.value.output.value).toString();
        if (ev?.case === 'end') r.exitCode = ev.value.exitCode;
      }
      return r;
    };
    const missing = await run(`${tmp.dir}/no-interp`, []);
    assert.equal(missing.exitCode, 127);
    assert.equal(missing.err, `envd: cannot run ${tmp.dir}/no-interp: no such file or directory (or its interpreter)\n`);
    assert.deepEqual(await run(`${tmp.dir}/no-shebang`, ['arg']), { out: `ran in sh: ${tmp.dir}/no-shebang arg\n`, err: '', exitCode: 0 });
  });

  test('a port it cannot take ends the process with a failure (no half-started envd that answers nothing)', async () => {
    await assert.rejects(
      startEnvd({ ENVD_PORT: String(envd.port) }, { entry: `${tmp.dir}/envd/${ENVD_START}`, nodeFlags: FLAGS }),
      /envd exited early \(1\)/,
    );
  });

  test("a request and a command load neither Node's built-in undici nor worker_threads (web Headers, pino)", async () => {
    // Node's lazy global Headers loads all of undici on first use, ~45 ms of CPU in a fresh envd's first request.
    const probe = `${tmp.dir}/module-list.cjs`;
    const listFile = `${tmp.dir}/modules.json`;
    await writeFile(probe, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(listFile)}, JSON.stringify(process.moduleLoadList)));`);
    const probed = await startEnvd({}, { entry: `${tmp.dir}/envd/${ENVD_START}`, nodeFlags: [...FLAGS, '--require', probe] });
    try {
      assert.equal((await probed.init({ defaultUser: 'root' })).status, 204);
      const s = await Sandbox.create({ debug: true, sandboxUrl: probed.url });
      assert.equal((await s.commands.run('echo probed')).stdout, 'probed\n');
      assert.ok((await s.files.list(tmp.dir)).length > 0, 'a listing');
    } finally {
      await probed.stop();
    }
    const loaded = JSON.parse(await readFile(listFile, 'utf8')) as string[];
    assert.ok(loaded.length > 50, `the probe saw the module list (${loaded.length})`);
    assert.deepEqual(loaded.filter((m) => /\bundici\b|\bworker_threads$/.test(m)), []);
  });

  test('the launcher runs envd from a code cache made for it, and compiles as usual without one or with a bad one', async () => {
    const dir = `${tmp.dir}/envd`;
    assert.equal(codeCacheOf(envd), 'none', 'a bundle without a cache');
    const cache = await makeCache(dir);
    assert.ok(cache.length > 100_000, `a cache of envd's start (${cache.length} bytes)`);
    await writeFile(`${dir}/${ENVD_CODE_CACHE}`, cache);
    const cached = await startEnvd({}, { entry: `${dir}/${ENVD_START}`, nodeFlags: FLAGS });
    try {
      assert.equal(codeCacheOf(cached), 'used');
      assert.equal((await cached.init({ defaultUser: 'root' })).status, 204);
      const s = await Sandbox.create({ debug: true, sandboxUrl: cached.url });
      assert.equal((await s.commands.run('echo cached')).stdout, 'cached\n');
      // Metadata loads fs-xattr on first use: a lazily loaded module, after a start compiled from the cache.
      await s.files.write(`${tmp.dir}/cached.txt`, 'x', { metadata: { k: 'cached' } });
      assert.deepEqual((await s.files.getInfo(`${tmp.dir}/cached.txt`)).metadata, { k: 'cached' });
    } finally {
      await cached.stop();
    }
    // Other flags than the cache was made under: V8 refuses it, envd starts all the same.
    const otherFlags = await startEnvd({}, { entry: `${dir}/${ENVD_START}`, nodeFlags: [...FLAGS.filter((f) => f !== '--optimize-for-size')] });
    await otherFlags.stop();
    assert.equal(codeCacheOf(otherFlags), 'rejected');
    // Garbage in the cache's place (a truncated or damaged file): refused, envd starts all the same.
    await writeFile(`${dir}/${ENVD_CODE_CACHE}`, cache.subarray(0, cache.length >> 1));
    const damaged = await startEnvd({}, { entry: `${dir}/${ENVD_START}`, nodeFlags: FLAGS });
    try {
      assert.equal(codeCacheOf(damaged), 'rejected');
      assert.equal((await fetch(`${damaged.url}/health`)).status, 204);
    } finally {
      await damaged.stop();
    }
  });
});
