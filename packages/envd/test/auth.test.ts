// cove-test: serial (long and timing-sensitive: it runs alone, see packages/cli/src/test-suite.ts)
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Filesystem } from '@cove/contracts/envd/filesystem';
import { Process } from '@cove/contracts/envd/process';
import { Sandbox } from 'e2b';
import { ENVD_VERSION, fileSignature } from '../src/index.js';
import { startEnvd, tempDir, type RunningEnvd } from './envd-process.js';

const TOKEN = 'tok-' + 'a'.repeat(32);

describe('auth, signatures and bad input', () => {
  let envd: RunningEnvd;
  let tmp: Awaited<ReturnType<typeof tempDir>>;

  const transport = (headers: Record<string, string>) =>
    createConnectTransport({
      baseUrl: envd.url,
      httpVersion: '1.1',
      interceptors: [(next) => (req) => {
        for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
        return next(req);
      }],
    });

  before(async () => {
    envd = await startEnvd({ ENVD_MAX_UPLOAD_BYTES: String(1024 * 1024) });
    tmp = await tempDir();
  });
  after(async () => {
    await tmp.cleanup();
    await envd.stop();
  });

  test('/init needs the orchestrator init token', async () => {
    const none = await fetch(`${envd.url}/init`, { method: 'POST', body: '{}' });
    assert.equal(none.status, 401);
    assert.deepEqual(await none.json(), { code: 401, message: 'missing X-Cove-Init-Token' });
    const wrong = await fetch(`${envd.url}/init`, { method: 'POST', headers: { 'x-cove-init-token': 'nope' }, body: '{}' });
    assert.equal(wrong.status, 403);
    const bad = await fetch(`${envd.url}/init`, { method: 'POST', headers: { 'x-cove-init-token': envd.initToken }, body: '{"envVars":' });
    assert.equal(bad.status, 400);
    const ok = await envd.init({ accessToken: TOKEN, defaultUser: 'root', envVars: { A: '1' }, timestamp: new Date().toISOString() });
    assert.equal(ok.status, 204);
    assert.equal(ok.headers.get('x-envd-version'), ENVD_VERSION);
  });

  test('/health is open and reports the version', async () => {
    const res = await fetch(`${envd.url}/health`);
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('x-envd-version'), ENVD_VERSION);
  });

  test('HTTP routes need X-Access-Token once set', async () => {
    for (const path of ['/envs', '/metrics', `/files?path=${tmp.dir}/x`]) {
      assert.equal((await fetch(`${envd.url}${path}`)).status, 401, `${path} without token`);
      assert.equal((await fetch(`${envd.url}${path}`, { headers: { 'x-access-token': 'wrong' } })).status, 401, `${path} wrong token`);
    }
    const envs = await fetch(`${envd.url}/envs`, { headers: { 'x-access-token': TOKEN } });
    assert.deepEqual(await envs.json(), { A: '1' });
    const metrics = (await (await fetch(`${envd.url}/metrics`, { headers: { 'x-access-token': TOKEN } })).json()) as Record<string, number>;
    for (const k of ['ts', 'cpu_count', 'cpu_used_pct', 'mem_total', 'mem_used', 'mem_cache', 'mem_total_mib', 'mem_used_mib', 'disk_used', 'disk_total']) {
      assert.equal(typeof metrics[k], 'number', k);
    }
  });

  test('RPCs need X-Access-Token (unauthenticated)', async () => {
    const anon = createClient(Process, transport({}));
    await assert.rejects(anon.list({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
    const wrong = createClient(Filesystem, transport({ 'x-access-token': 'nope' }));
    await assert.rejects(wrong.stat({ path: '/' }), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
    const streaming = createClient(Process, transport({}));
    await assert.rejects(async () => {
      for await (const _ of streaming.start({ process: { cmd: '/bin/true' } })) void _;
    }, (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
    const ok = createClient(Filesystem, transport({ 'x-access-token': TOKEN }));
    assert.equal((await ok.stat({ path: '/' })).entry?.path, '/');
  });

  test('the SDK with an access token: commands, and signed upload/download URLs', async () => {
    const SandboxCtor = Sandbox as unknown as new (o: Record<string, unknown>) => Sandbox;
    const sbx = new SandboxCtor({ sandboxId: 'test', envdVersion: ENVD_VERSION, envdAccessToken: TOKEN, sandboxUrl: envd.url, debug: true });
    assert.equal((await sbx.commands.run('echo $A')).stdout, '1\n');
    const target = `${tmp.dir}/signed.txt`;
    const up = await sbx.uploadUrl(target);
    const form = new FormData();
    form.append('file', new Blob(['signed body']), target);
    const upRes = await fetch(up, { method: 'POST', body: form });
    assert.equal(upRes.status, 200, await upRes.clone().text());
    assert.equal(await readFile(target, 'utf8'), 'signed body');
    const down = await sbx.downloadUrl(target, { useSignatureExpiration: 60 });
    const downRes = await fetch(down);
    assert.equal(downRes.status, 200);
    assert.equal(await downRes.text(), 'signed body');
    // A signature for reading does not allow writing.
    assert.equal((await fetch(down, { method: 'POST', body: form })).status, 401);
    // A tampered path is refused.
    assert.equal((await fetch(down.replace('signed.txt', 'other.txt'))).status, 401);
  });

  test('expired signature → 401 "signature is already expired"', async () => {
    const path = `${tmp.dir}/signed.txt`;
    const exp = Math.floor(Date.now() / 1000) - 10;
    const sig = fileSignature(path, 'read', '', TOKEN, exp);
    const res = await fetch(`${envd.url}/files?path=${encodeURIComponent(path)}&signature=${sig}&signature_expiration=${exp}`);
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { code: 401, message: 'signature is already expired' });
  });

  test('missing file → 404 JSON; oversized upload → 413 JSON', async () => {
    const missing = await fetch(`${envd.url}/files?path=${tmp.dir}/none`, { headers: { 'x-access-token': TOKEN } });
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { code: number }).code, 404);
    const big = await fetch(`${envd.url}/files?path=${tmp.dir}/big`, {
      method: 'POST',
      headers: { 'x-access-token': TOKEN, 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(2 * 1024 * 1024),
    });
    assert.equal(big.status, 413);
    assert.equal(((await big.json()) as { code: number }).code, 413);
    const form = new FormData();
    form.append('file', new Blob([Buffer.alloc(1024 * 1024 + 10)]), `${tmp.dir}/big2`);
    const bigMultipart = await fetch(`${envd.url}/files`, { method: 'POST', headers: { 'x-access-token': TOKEN }, body: form });
    assert.equal(bigMultipart.status, 413);
    await assert.rejects(readFile(`${tmp.dir}/big2`), 'partial upload removed');
  });

  test('a full disk answers 507 with a JSON body', { skip: process.getuid?.() === 0 ? false : 'needs root to mount a tmpfs' }, async () => {
    const small = `${tmp.dir}/small`;
    await mkdir(small);
    // In envd's mount namespace (as root the fixture gives envd one of its own): a mount made here after envd
    // started would not show there.
    const inEnvdNs = [`--mount=/proc/${envd.proc.pid}/ns/mnt`];
    execFileSync('nsenter', [...inEnvdNs, 'mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', small]);
    try {
      const t0 = Date.now();
      const res = await fetch(`${envd.url}/files?path=${small}/big.bin`, {
        method: 'POST',
        headers: { 'x-access-token': TOKEN, 'content-type': 'application/octet-stream' },
        body: Buffer.alloc(512 * 1024, 1),
      });
      assert.equal(res.status, 507);
      assert.equal(((await res.json()) as { code: number }).code, 507);
      // At once: the rest of the body is read and dropped, not waited on until envd's 15 s drain bound.
      assert.ok(Date.now() - t0 < 5_000, `answered after ${Date.now() - t0} ms`);
    } finally {
      execFileSync('nsenter', [...inEnvdNs, 'umount', small]);
    }
  });

  test('malformed input is refused, not fatal', async () => {
    const h = { 'x-access-token': TOKEN, 'content-type': 'application/json' };
    const badJson = await fetch(`${envd.url}/filesystem.Filesystem/Stat`, { method: 'POST', headers: h, body: '{"path":' });
    assert.equal(badJson.status, 400);
    assert.equal(((await badJson.json()) as { code: string }).code, 'invalid_argument');
    const wrongType = await fetch(`${envd.url}/process.Process/Start`, { method: 'POST', headers: { ...h, 'content-type': 'application/connect+json' }, body: 'garbage' });
    assert.ok(wrongType.status >= 200 && wrongType.status < 500);
    const fs = createClient(Filesystem, transport({ 'x-access-token': TOKEN }));
    await assert.rejects(fs.stat({ path: '/tmp/a\0b' }), (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument);
    await assert.rejects(fs.stat({ path: '' }), (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument);
    await assert.rejects(fs.stat({ path: `${tmp.dir}/missing` }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
    await assert.rejects(fs.getWatcherEvents({ watcherId: 'nope' }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
    const nul = await fetch(`${envd.url}/files?path=%2Ftmp%2Fa%00b`, { headers: { 'x-access-token': TOKEN } });
    assert.equal(nul.status, 400);
    const notUtf8 = await fetch(`${envd.url}/files?path=%2Ftmp%2F%FF`, { headers: { 'x-access-token': TOKEN } });
    assert.equal(notUtf8.status, 400);
    const badGzip = await fetch(`${envd.url}/files?path=${tmp.dir}/gz`, {
      method: 'POST',
      headers: { 'x-access-token': TOKEN, 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' },
      body: 'definitely not gzip',
    });
    assert.equal(badGzip.status, 400);
    const badMultipart = await fetch(`${envd.url}/files`, {
      method: 'POST',
      headers: { 'x-access-token': TOKEN, 'content-type': 'multipart/form-data; boundary=zzz' },
      body: 'garbage',
    });
    assert.equal(badMultipart.status, 400);
    const proc = createClient(Process, transport({ 'x-access-token': TOKEN }));
    await assert.rejects(async () => {
      for await (const _ of proc.start({ process: { cmd: 'no-such-executable' } })) void _;
    }, (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument);
    await assert.rejects(async () => {
      for await (const _ of proc.start({ process: { cmd: '/bin/echo', args: ['a\0b'] } })) void _;
    }, (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument);
    await assert.rejects(proc.sendSignal({ process: { selector: { case: 'pid', value: 999_999 } }, signal: 9 }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
    await assert.rejects(proc.sendInput({ process: { selector: { case: 'tag', value: 'none' } }, input: { input: { case: 'stdin', value: new Uint8Array([1]) } } }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
    const unknownUser = createClient(Filesystem, transport({ 'x-access-token': TOKEN, authorization: 'Basic ' + Buffer.from('nosuchuser:').toString('base64') }));
    await assert.rejects(unknownUser.stat({ path: '/' }), (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument && /nosuchuser/.test(e.message));
  });

  test('polling watcher (CreateWatcher / GetWatcherEvents / RemoveWatcher)', async () => {
    const fs = createClient(Filesystem, transport({ 'x-access-token': TOKEN }));
    const { watcherId } = await fs.createWatcher({ path: tmp.dir, recursive: false });
    await fetch(`${envd.url}/files?path=${tmp.dir}/polled.txt`, { method: 'POST', headers: { 'x-access-token': TOKEN, 'content-type': 'application/octet-stream' }, body: 'p' });
    const seen: string[] = [];
    const deadline = Date.now() + 10_000;
    while (!seen.includes('polled.txt') && Date.now() < deadline) {
      for (const e of (await fs.getWatcherEvents({ watcherId })).events) seen.push(e.name);
    }
    assert.ok(seen.includes('polled.txt'));
    await fs.removeWatcher({ watcherId });
    await assert.rejects(fs.removeWatcher({ watcherId }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
  });

  test('StreamInput (client streaming) feeds stdin', async () => {
    const proc = createClient(Process, transport({ 'x-access-token': TOKEN }));
    let pid = 0;
    let out = '';
    const stream = proc.start({ process: { cmd: '/bin/sh', args: ['-c', 'read a; echo "in:$a"'] }, stdin: true });
    for await (const m of stream) {
      const ev = m.event?.event;
      if (ev?.case === 'start') {
        pid = ev.value.pid;
        async function* input() {
          yield { event: { case: 'start' as const, value: { process: { selector: { case: 'pid' as const, value: pid } } } } };
          yield { event: { case: 'data' as const, value: { input: { input: { case: 'stdin' as const, value: new TextEncoder().encode('streamed\n') } } } } };
        }
        await proc.streamInput(input());
      }
      if (ev?.case === 'data' && ev.value.output.case === 'stdout') out += Buffer.from(ev.value.output.value).toString();
    }
    assert.equal(out, 'in:streamed\n');
  });

  test('envd is still up after all of it', async () => {
    assert.ok(envd.alive());
    assert.ok(!envd.logs.some((l) => l.includes('uncaught exception')), 'no uncaught exceptions logged');
    assert.equal((await fetch(`${envd.url}/health`)).status, 204);
  });
});

describe('/init refused when envd has no init token', () => {
  let envd: RunningEnvd;
  before(async () => {
    envd = await startEnvd({ COVE_ENVD_INIT_TOKEN: '' });
  });
  after(() => envd.stop());

  test('403', async () => {
    const res = await fetch(`${envd.url}/init`, { method: 'POST', headers: { 'x-cove-init-token': 'anything' }, body: '{}' });
    assert.equal(res.status, 403);
  });
});

describe("a pooled slot's /init, then its claim's", () => {
  // The node's warm-up /inits a pooled envd with the template's defaults and no timestamp (the orchestrator's
  // envd-warmup.ts); the claim's /init, timestamped, must then apply in full.
  let envd: RunningEnvd;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    envd = await startEnvd();
    tmp = await tempDir();
  });
  after(async () => {
    await tmp.cleanup();
    await envd.stop();
  });

  test("the claim's token, env and workdir hold after an untimestamped /init", async () => {
    assert.equal((await envd.init({ defaultUser: 'root', defaultWorkdir: tmp.dir })).status, 204);
    const SandboxCtor = Sandbox as unknown as new (o: Record<string, unknown>) => Sandbox;
    const pooled = new SandboxCtor({ sandboxId: 'test', envdVersion: ENVD_VERSION, sandboxUrl: envd.url, debug: true });
    assert.equal((await pooled.commands.run('pwd')).stdout, `${tmp.dir}\n`);

    const claim = await envd.init({ accessToken: TOKEN, envVars: { B: '2' }, defaultUser: 'root', defaultWorkdir: '/', timestamp: new Date().toISOString() });
    assert.equal(claim.status, 204);
    assert.equal((await fetch(`${envd.url}/envs`)).status, 401, 'the access token guards envd');
    const claimed = new SandboxCtor({ sandboxId: 'test', envdVersion: ENVD_VERSION, envdAccessToken: TOKEN, sandboxUrl: envd.url, debug: true });
    assert.equal((await claimed.commands.run('pwd; echo $B')).stdout, '/\n2\n');
    // An /init older than the claim's changes nothing.
    await envd.init({ accessToken: '', defaultWorkdir: tmp.dir, timestamp: new Date(Date.now() - 60_000).toISOString() });
    assert.equal((await fetch(`${envd.url}/envs`)).status, 401);
    assert.equal((await claimed.commands.run('pwd')).stdout, '/\n');
  });
});
