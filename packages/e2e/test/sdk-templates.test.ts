// Issue 4 proof: the unchanged `e2b` SDK builds templates inside the cluster (Template.build: v3 create,
// upload URL from cluster storage, PUT, v2 build, status polling with logs) and Sandbox.create runs them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BuildError, Sandbox, Template, waitForPort, type LogEntry } from 'e2b';
import { request } from 'undici';
import { deployment } from './deployment.js';

const BUILD_TIMEOUT = 240_000;

describe('template builds through the unchanged SDK', () => {
  const tag = randomBytes(4).toString('hex');
  const name = `e2e-app-${tag}`;
  const secret = `cove-copy-secret-${randomBytes(8).toString('hex')}`;
  const made: Sandbox[] = [];
  let ctx: string;

  /** The template under test: every step type, a COPY of a file, a dir and a symlink, a start + ready command. */
  function appTemplate() {
    return Template({ fileContextPath: ctx })
      .fromTemplate('base')
      .runCmd(`echo step-$((6*7)) run-${tag} && mkdir -p /srv/data && echo built > /srv/data/built.txt`)
      .copy('app', '/app/', { user: 'user' })
      .copy('tool.sh', '/usr/local/bin/tool.sh', { mode: 0o755 })
      .setEnvs({ GREETING: 'hello-from-template', APP_HOME: '/app' })
      .setWorkdir('/app')
      .runCmd('whoami > /tmp/builder && pwd >> /tmp/builder', { user: 'root' })
      .setUser('user')
      .setStartCmd('python3 -m http.server 8000 --directory /app', waitForPort(8000));
  }

  before(() => {
    deployment();
    ctx = mkdtempSync(join(tmpdir(), 'cove-tpl-'));
    mkdirSync(join(ctx, 'app', 'sub'), { recursive: true });
    writeFileSync(join(ctx, 'app', 'index.html'), `<p>${secret}</p>\n`);
    writeFileSync(join(ctx, 'app', 'sub', 'nested.txt'), 'nested\n');
    symlinkSync('index.html', join(ctx, 'app', 'link.html'));
    writeFileSync(join(ctx, 'tool.sh'), '#!/bin/sh\necho tool-ok\n');
  });
  after(async () => {
    await Promise.all(made.map((s) => s.kill().catch(() => undefined)));
    rmSync(ctx, { recursive: true, force: true });
  });

  test('Template.build runs every step in the cluster, streams logs, and Sandbox.create runs the template', { timeout: BUILD_TIMEOUT }, async () => {
    const logs: LogEntry[] = [];
    const info = await Template.build(appTemplate(), name, { cpuCount: 1, memoryMB: 512, onBuildLogs: (e) => logs.push(e) });
    assert.equal(info.name, name);
    assert.match(info.templateId, /^[a-z0-9]+$/);
    const text = logs.map((e) => e.message).join('\n');
    assert.match(text, /step-42/, 'RUN output is streamed into the build logs');

    const sbx = await Sandbox.create(name, { timeoutMs: 120_000 });
    made.push(sbx);
    const run = (cmd: string) => sbx.commands.run(cmd).then((r) => r.stdout.trim());
    assert.equal(await run('cat /srv/data/built.txt'), 'built');
    assert.equal(await run('cat /app/index.html'), `<p>${secret}</p>`);
    assert.equal(await run('cat /app/sub/nested.txt'), 'nested');
    assert.equal(await run('readlink /app/link.html'), 'index.html', 'symlinks are copied as symlinks');
    assert.equal(await run('stat -c %U /app/index.html'), 'user', 'COPY owner');
    assert.equal(await run('stat -c %a /usr/local/bin/tool.sh'), '755', 'COPY mode');
    assert.equal(await run('tool.sh'), 'tool-ok');
    assert.equal(await run('echo $GREETING $APP_HOME'), 'hello-from-template /app', 'ENV reaches sandboxes');
    assert.equal(await run('cat /tmp/builder'), 'root\n/app', 'RUN as root in the WORKDIR');
    assert.equal(await run('id -un'), 'user');

    // The start command is running and answers through the edge.
    const d = deployment();
    const res = await request(`http://127.0.0.1:${d.ports.edgeTraffic}/index.html`, { headers: { host: sbx.getHost(8000) } });
    assert.equal(res.statusCode, 200);
    assert.match(await res.body.text(), new RegExp(secret));

    const sbxInfo = await sbx.getInfo();
    assert.equal(sbxInfo.templateId, info.templateId);
    assert.equal(sbxInfo.cpuCount, 1);
    assert.equal(sbxInfo.memoryMB, 512);
  });

  test('an unchanged rebuild reuses every layer; skipCache runs the steps again', { timeout: BUILD_TIMEOUT }, async () => {
    const cached: LogEntry[] = [];
    const started = Date.now();
    await Template.build(appTemplate(), name, { cpuCount: 1, memoryMB: 512, onBuildLogs: (e) => cached.push(e) });
    const cachedMs = Date.now() - started;
    assert.doesNotMatch(cached.map((e) => e.message).join('\n'), /step-42/, 'no step ran again');
    console.log(`fully cached rebuild: ${cachedMs} ms`);

    const forced: LogEntry[] = [];
    await Template.build(appTemplate(), name, { cpuCount: 1, memoryMB: 512, skipCache: true, onBuildLogs: (e) => forced.push(e) });
    assert.match(forced.map((e) => e.message).join('\n'), /step-42/, 'skipCache runs RUN again');
  });

  test('COPY sources never pass through the control plane', () => {
    const log = readFileSync(deployment().requestLog, 'utf8');
    assert.ok(log.length > 0);
    assert.ok(!log.includes(secret), 'the control plane request log holds the COPY source content');
  });

  test('a failing step ends the build with an error naming the step; logs are kept', { timeout: BUILD_TIMEOUT }, async () => {
    const logs: LogEntry[] = [];
    const failing = Template().fromTemplate('base').runCmd('echo about-to-fail').runCmd('echo boom-$((1+1)) >&2; exit 3');
    await assert.rejects(
      Template.build(failing, `e2e-fail-${tag}`, { onBuildLogs: (e) => logs.push(e) }),
      (err: unknown) => {
        assert.ok(err instanceof BuildError, `got ${String(err)}`);
        return true;
      },
    );
    assert.match(logs.map((e) => e.message).join('\n'), /boom-2/);
  });

  test('fromImage resolves through the cluster registry (seeded with debian:bookworm)', { timeout: BUILD_TIMEOUT }, async () => {
    const t = Template().fromImage('debian:bookworm').runCmd('echo image-$((2*3)) > /image.txt');
    const info = await Template.build(t, `e2e-img-${tag}`, { cpuCount: 1, memoryMB: 512 });
    const sbx = await Sandbox.create(info.name, { timeoutMs: 60_000 });
    made.push(sbx);
    assert.equal((await sbx.commands.run('cat /image.txt')).stdout.trim(), 'image-6');
    assert.match((await sbx.commands.run('cat /etc/debian_version')).stdout, /^12\./);
  });

  test('an unknown base template or image is a clear build error', { timeout: BUILD_TIMEOUT }, async () => {
    await assert.rejects(Template.build(Template().fromTemplate(`no-such-${tag}`).runCmd('true'), `e2e-nobase-${tag}`));
    await assert.rejects(Template.build(Template().fromImage(`no-such-image-${tag}:1`).runCmd('true'), `e2e-noimg-${tag}`), /image|not found/i);
  });

  test('a template in use cannot be deleted; once unused it can', { timeout: BUILD_TIMEOUT }, async () => {
    const d = deployment();
    const t = Template().fromTemplate('base').runCmd('echo del > /del.txt');
    const info = await Template.build(t, `e2e-del-${tag}`, { cpuCount: 1, memoryMB: 256 });
    const sbx = await Sandbox.create(info.name, { timeoutMs: 60_000 });
    const del = () => request(`${d.env.E2B_API_URL}/templates/${info.templateId}`, { method: 'DELETE', headers: { 'x-api-key': d.env.E2B_API_KEY } });
    const refused = await del();
    assert.equal(refused.statusCode, 409, await refused.body.text());
    await sbx.kill();
    const ok = await del();
    assert.equal(ok.statusCode, 204, await ok.body.text());
    assert.equal(await Template.exists(info.name), false);
  });
});
