// The unchanged e2b SDK's Template API against the control plane, with the wire-level cluster fixture behind
// it: Template.build (v3 registration, upload link, PUT of the COPY tar to the cluster, v2 start, status
// polling with logs, redirected to a stand-in of the cluster's public port), failures with reason.step, buildInBackground settled by the watcher, exists, tags.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BuildError, Sandbox, Template, type LogEntry } from 'e2b';
import { setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

describe('unchanged e2b SDK Template API against the control plane', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let teamId: string;
  let ctx: string;
  const saved = { url: process.env.E2B_API_URL, key: process.env.E2B_API_KEY };

  before(async () => {
    ctx = mkdtempSync(join(tmpdir(), 'cove-cp-sdk-tpl-'));
    writeFileSync(join(ctx, 'hello.txt'), 'hello from the SDK\n');
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    // The "orchestrator": logs one line per step, fails a step that runs `exit 3`, else finishes ready.
    cluster.onBuild = (buildId) => {
      const { build } = cluster.findBuild(buildId)!;
      build.request.steps.forEach((s, i) => cluster.log(buildId, { message: `step ${i + 1}: ${s.type} ${s.args.join(' ')}`, step: String(i + 1) }));
      const bad = build.request.steps.findIndex((s) => s.type === 'RUN' && s.args[0] === 'exit 3');
      cluster.finish(buildId, bad < 0 ? { ok: true } : { ok: false, message: `step ${bad + 1} exited with status 3`, step: String(bad + 1) });
    };
    cp = await startControlPlane();
    let key: string;
    // Build status reaches the SDK from the cluster's public port (the control plane redirects there).
    ({ key, teamId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 20, publicUrl: await cluster.startPublicPort(cp.url) }));
    process.env.E2B_API_URL = cp.url;
    process.env.E2B_API_KEY = key;
  });

  after(async () => {
    if (saved.url === undefined) delete process.env.E2B_API_URL;
    else process.env.E2B_API_URL = saved.url;
    if (saved.key === undefined) delete process.env.E2B_API_KEY;
    else process.env.E2B_API_KEY = saved.key;
    await cp.close();
    await cluster.close();
    rmSync(ctx, { recursive: true, force: true });
  });

  test('Template.build: files go to the cluster, logs stream back, Sandbox.create runs name:tag', async () => {
    const logs: LogEntry[] = [];
    const t = Template({ fileContextPath: ctx }).fromTemplate('base').runCmd('echo hi').copy('hello.txt', '/opt/hello.txt').setEnvs({ A: '1' });
    const info = await Template.build(t, 'sdk-app:v1', { cpuCount: 1, memoryMB: 512, onBuildLogs: (e) => logs.push(e) });
    assert.equal(info.name, 'sdk-app:v1');
    assert.match(info.templateId, /^[a-z0-9]{20}$/);
    assert.deepEqual(info.tags, ['v1']);
    const text = logs.map((e) => e.message).join('\n');
    assert.match(text, /step 1: RUN echo hi/);
    assert.match(text, /step 2: COPY hello.txt \/opt\/hello.txt/);

    const { request } = cluster.findBuild(info.buildId)!.build;
    const copy = request.steps[1]!;
    assert.match(copy.filesHash, /^[0-9a-f]{64}$/);
    const upload = cluster.uploads.get(`${teamId}/${copy.filesHash}`);
    assert.ok(upload && upload.length > 0, 'the SDK PUT the COPY tar to the cluster URL');
    assert.deepEqual([...upload.subarray(0, 2)], [0x1f, 0x8b], 'gzipped tar, as the SDK sends it');

    const sbx = await Sandbox.create('sdk-app:v1');
    const sinfo = await sbx.getInfo();
    assert.equal(sinfo.templateId, info.templateId);
    assert.equal(sinfo.name, 'sdk-app');
    assert.equal(sinfo.cpuCount, 1);
    assert.equal(sinfo.memoryMB, 512);
    await sbx.kill();

    // A second build of the same files: the cluster already holds them, so nothing is uploaded again.
    const before = cluster.uploads.size;
    await Template.build(t, 'sdk-app:v2', { cpuCount: 1, memoryMB: 512 });
    assert.equal(cluster.uploads.size, before);

    assert.equal(await Template.exists('sdk-app'), true);
    assert.equal(await Template.exists('no-such-template'), false);
    const tagged = await Template.assignTags('sdk-app:v1', ['prod']);
    assert.deepEqual(tagged, { buildId: info.buildId, tags: ['prod'] });
    const tags = await Template.getTags(info.templateId);
    assert.deepEqual(tags.map((x) => [x.tag, x.buildId]).sort(), [['prod', info.buildId], ['v1', info.buildId], ['v2', tags.find((x) => x.tag === 'v2')!.buildId]].sort());
    await Template.removeTags('sdk-app', 'prod');
    assert.ok(!(await Template.getTags(info.templateId)).some((x) => x.tag === 'prod'));
  });

  test('a failing step rejects with BuildError carrying the reason', async () => {
    const t = Template().fromTemplate('base').runCmd('echo ok').runCmd('exit 3');
    await assert.rejects(Template.build(t, 'sdk-failing'), (err: unknown) => {
      assert.ok(err instanceof BuildError, String(err));
      assert.match((err as Error).message, /step 2 exited with status 3/);
      return true;
    });
  });

  test('buildInBackground: the watcher settles the build with nobody polling; the default base image is base', async () => {
    const info = await Template.buildInBackground(Template().fromBaseImage().runCmd('echo bg'), 'sdk-background', { cpuCount: 1, memoryMB: 256 });
    assert.deepEqual(cluster.findBuild(info.buildId)!.build.request.source, { case: 'fromBuildId', value: 'base' });
    // The fixture finishes the build right after accepting it; only the watcher tells the control plane.
    const deadline = Date.now() + 10_000;
    while (!(await cp.cp.buildWatcher.runOnce()).includes(info.buildId)) {
      assert.ok(Date.now() < deadline, 'the watcher never saw the build end');
    }
    const status = await Template.getBuildStatus(info);
    assert.equal(status.status, 'ready');
    const sbx = await Sandbox.create('sdk-background');
    assert.equal((await sbx.getInfo()).templateId, info.templateId);
    await sbx.kill();
  });

  test('fromTemplate(code-interpreter-v1): the node builds on the built-in, as on base; another tag of it is refused', async () => {
    const info = await Template.buildInBackground(Template().fromTemplate('code-interpreter-v1').runCmd('echo on ci'), 'sdk-on-code-interpreter', { cpuCount: 2, memoryMB: 2048 });
    assert.deepEqual(cluster.findBuild(info.buildId)!.build.request.source, { case: 'fromBuildId', value: 'code-interpreter-v1' });
    const deadline = Date.now() + 10_000;
    while (!(await cp.cp.buildWatcher.runOnce()).includes(info.buildId)) {
      assert.ok(Date.now() < deadline, 'the watcher never saw the build end');
    }
    const sbx = await Sandbox.create('sdk-on-code-interpreter');
    assert.equal((await sbx.getInfo()).templateId, info.templateId);
    await sbx.kill();
    await assert.rejects(Template.build(Template().fromTemplate('code-interpreter-v1:other').runCmd('true'), 'sdk-bad-parent', { cpuCount: 1, memoryMB: 256 }), /base template 'code-interpreter-v1:other' not found/);
  });
});
