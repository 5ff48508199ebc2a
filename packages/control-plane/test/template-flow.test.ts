// Template builds end to end through real HTTP into the control plane and real gRPC / REST out of it to the
// wire-level cluster fixture (TemplateService, POST /v1/templates/files): registration, upload links, build
// start, the status route's redirect to the cluster, the watcher, names, tags, publishing, deletion, and sandboxes from
// `name:tag` — on SQLite and on a throwaway PostgreSQL.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Code } from '@connectrpc/connect';
import { BuildState } from '@cove/contracts/orchestrator';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';
import { postgresAvailable, startPostgres, type ThrowawayPostgres } from './fixtures/throwaway-postgres.js';

const HASH = 'ab'.repeat(32);

for (const engine of ['sqlite', 'postgres'] as const)
describe(`template builds through the control link (${engine} store)`, { skip: engine === 'postgres' && !postgresAvailable() ? 'postgresql 15 not installed' : false }, () => {
  let dir: string;
  let pgServer: ThrowawayPostgres | undefined;
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;
  let teamId: string;
  let otherKey: string;
  const env = () => ({ COVE_DB_URL: pgServer ? pgServer.url : join(dir, 'cp.db'), COVE_BUILD_LOST_AFTER_MS: '60000' });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cove-cp-tpl-'));
    if (engine === 'postgres') pgServer = await startPostgres();
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane(env(), dir);
    ({ key, teamId } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { maxConcurrentSandboxes: 50 }));
    ({ key: otherKey } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'other', maxConcurrentSandboxes: 50 }));
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    pgServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const lastCall = (pred: (c: FakeCluster['calls'][number]) => boolean) => [...cluster.calls].reverse().find(pred);
  const api = (method: string, path: string, body?: unknown, k = key) => call(cp.url, method, path, { key: k, body });
  const register = (body: Record<string, unknown>, k = key) => api('POST', '/v3/templates', body, k);
  const start = (templateID: string, buildID: string, body: Record<string, unknown> = { fromTemplate: 'base', steps: [] }, k = key) =>
    api('POST', `/v2/templates/${templateID}/builds/${buildID}`, body, k);
  /**
   * The status route redirects to the cluster's public port (307; the edge answers from the builder node, see
   * observability.test.ts): here it yields the state the control plane records after its watcher's pass.
   */
  const status = async (templateID: string, buildID: string, query = '', k = key) => {
    const r = await api('GET', `/templates/${templateID}/builds/${buildID}/status${query}`, undefined, k);
    if (r.status !== 307) return r;
    await cp.cp.buildWatcher.runOnce();
    const b = (await cp.cp.templateStore.getBuild(buildID))!;
    const reason = b.reason ? { reason: { message: b.reason.message, ...(b.reason.step ? { step: b.reason.step } : {}) } } : {};
    return { status: 200, headers: r.headers, body: { templateID, buildID, status: b.status, ...reason } as Record<string, any> };
  };

  /** Registers, starts and finishes a build of `name`; returns its ids. */
  async function built(name: string, opts: { k?: string; body?: Record<string, unknown>; cpuCount?: number; memoryMB?: number } = {}) {
    const r = await register({ name, cpuCount: opts.cpuCount ?? 1, memoryMB: opts.memoryMB ?? 256 }, opts.k);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const s = await start(r.body.templateID, r.body.buildID, opts.body, opts.k);
    assert.equal(s.status, 202, JSON.stringify(s.body));
    cluster.finish(r.body.buildID, { ok: true });
    const st = await status(r.body.templateID, r.body.buildID, '', opts.k);
    assert.equal(st.body.status, 'ready');
    return { templateID: r.body.templateID as string, buildID: r.body.buildID as string };
  }

  test('the whole flow: register, upload link, start, status relay with paging and levels, ready, sandbox from name:tag', async () => {
    const r = await register({ name: 'app:v1', tags: ['stable'], cpuCount: 1, memoryMB: 512 });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.match(r.body.templateID, /^[a-z0-9]{20}$/);
    assert.match(r.body.buildID, /^[0-9a-f-]{36}$/);
    assert.deepEqual({ names: r.body.names, aliases: r.body.aliases, public: r.body.public, tags: r.body.tags }, { names: ['app'], aliases: ['app'], public: false, tags: ['v1', 'stable'] });
    const { templateID, buildID } = r.body as { templateID: string; buildID: string };

    const waiting = await status(templateID, buildID);
    assert.equal(waiting.status, 200);
    assert.deepEqual(waiting.body, { templateID, buildID, status: 'waiting' });

    // COPY files: the cluster answers where to upload; the control plane only relays the link.
    const link = await api('GET', `/templates/${templateID}/files/${HASH}`);
    assert.equal(link.status, 201, JSON.stringify(link.body));
    assert.equal(link.body.present, false);
    assert.match(link.body.url, new RegExp(`^${cluster.endpoint}/storage/upload\\?token=`));
    assert.deepEqual(link.body.headers, { 'x-upload-scope': `${teamId}/${HASH}` });
    const edgeCall = lastCall((c) => c.method === 'POST /v1/templates/files');
    assert.deepEqual(edgeCall?.body, { teamId, hash: HASH });
    assert.equal(edgeCall?.authorization, `Bearer ${cluster.token}`);
    cluster.storedFiles.add(`${teamId}/${HASH}`);
    assert.deepEqual((await api('GET', `/templates/app/files/${HASH}`)).body, { present: true });

    const body = {
      fromTemplate: 'base',
      startCmd: 'python3 -m http.server 8000',
      readyCmd: '[ -n "$(ss -Htuln sport = :8000)" ]',
      force: false,
      steps: [
        { type: 'RUN', args: ['echo hi', 'root'], force: false },
        { type: 'COPY', args: ['file.txt', '/app/file.txt', '', ''], force: false, filesHash: HASH, forceUpload: undefined, gzip: true },
        { type: 'ENV', args: ['A', '1', 'B', '2'], force: true },
        { type: 'WORKDIR', args: ['/app'], force: false },
        { type: 'USER', args: ['user'], force: false },
      ],
    };
    const s = await start(templateID, buildID, body);
    assert.equal(s.status, 202, JSON.stringify(s.body));
    const b = lastCall((c) => c.method === 'Build');
    assert.equal(b?.nodeId, 'node-a');
    assert.equal(b?.authorization, `Bearer ${cluster.token}`);
    const req = cluster.findBuild(buildID)!.build.request;
    assert.equal(req.templateId, templateID);
    assert.equal(req.teamId, teamId);
    assert.deepEqual(req.source, { case: 'fromBuildId', value: 'base' });
    assert.equal(req.vcpu, 1);
    assert.equal(req.memoryMb, 512);
    assert.equal(req.startCmd, body.startCmd);
    assert.equal(req.readyCmd, body.readyCmd);
    assert.deepEqual(
      req.steps.map((x) => ({ type: x.type, args: x.args, force: x.force, filesHash: x.filesHash })),
      body.steps.map((x) => ({ type: x.type, args: x.args, force: x.force, filesHash: x.filesHash ?? '' })),
    );
    assert.equal((await start(templateID, buildID, body)).status, 409, 'a build starts once');

    // Logs never pass through the control plane: the status route is a redirect; the node is asked for the state
    // only (an offset past the end of the log: no entries).
    for (let i = 0; i < 5; i++) cluster.log(buildID, { message: `line ${i}`, level: 'info', step: '1' });
    const redirected = await api('GET', `/templates/${templateID}/builds/${buildID}/status?logsOffset=3`);
    assert.equal(redirected.status, 307);
    assert.match(String(redirected.headers.location), new RegExp(`/templates/${templateID}/builds/${buildID}/status\\?logsOffset=3&cove_grant=`));
    cluster.finish(buildID, { ok: true });
    const ready = await status(templateID, buildID);
    assert.equal(ready.body.status, 'ready');
    assert.equal(ready.body.reason, undefined);
    const asked = cluster.calls.filter((c) => c.method === 'BuildStatus');
    assert.ok(asked.length > 0 && asked.every((c) => c.logsOffset === 0xffffffff), JSON.stringify(asked.map((c) => c.logsOffset)));

    // The tag, the extra tag, the bare name (no default tag on this build!) and the id.
    for (const ref of ['app:v1', 'app:stable', templateID + ':v1']) {
      const c = await api('POST', '/sandboxes', { templateID: ref, timeout: 60 });
      assert.equal(c.status, 201, `${ref}: ${JSON.stringify(c.body)}`);
      assert.equal(c.body.templateID, templateID);
      assert.equal(c.body.alias, 'app');
      const create = cluster.calls.find((x) => x.method === 'Create' && x.sandboxId === c.body.sandboxID);
      assert.deepEqual([create?.templateId, create?.buildId, create?.vcpu, create?.memoryMb], [templateID, buildID, 1, 512]);
      const d = await api('GET', `/sandboxes/${c.body.sandboxID}`);
      assert.deepEqual([d.body.cpuCount, d.body.memoryMB, d.body.diskSizeMB, d.body.envdVersion], [1, 512, 2048, '0.6.4']);
      assert.equal((await api('DELETE', `/sandboxes/${c.body.sandboxID}`)).status, 204);
    }
    const bare = await api('POST', '/sandboxes', { templateID: 'app' });
    assert.equal(bare.status, 404, 'app has no default tag yet');
    assert.match(bare.body.message, /no tag 'default'/);
    assert.equal((await api('POST', '/sandboxes', { templateID: 'app:nope' })).status, 404);

    // The base template still goes to nodes with an empty build id.
    const baseSbx = await api('POST', '/v2/sandboxes', { templateID: 'base' });
    assert.equal(baseSbx.status, 201);
    assert.equal(cluster.calls.find((x) => x.method === 'Create' && x.sandboxId === baseSbx.body.sandboxID)?.buildId, '');
    await api('DELETE', `/sandboxes/${baseSbx.body.sandboxID}`);

    const list = await api('GET', '/templates');
    const app = list.body.find((t: { templateID: string }) => t.templateID === templateID);
    assert.deepEqual(
      [app.names, app.aliases, app.buildID, app.buildStatus, app.cpuCount, app.memoryMB, app.envdVersion, app.public, app.buildCount, app.spawnCount],
      [['app'], ['app'], buildID, 'ready', 1, 512, '0.6.4', false, 1, 3],
    );
    assert.ok(list.body.some((t: { templateID: string; public: boolean }) => t.templateID === 'base' && t.public));
    const detail = await api('GET', '/templates/app');
    assert.equal(detail.status, 200);
    assert.equal(detail.body.templateID, templateID);
    assert.deepEqual(detail.body.builds.map((x: { buildID: string; status: string }) => [x.buildID, x.status]), [[buildID, 'ready']]);
    assert.equal(detail.body.builds[0].envdVersion, '0.6.4');
  });

  test('a rebuild of the same name is a new build of the same template; a failed one keeps the working tag', async () => {
    const one = await built('keeper');
    const again = await register({ name: 'keeper', cpuCount: 1, memoryMB: 256 });
    assert.equal(again.status, 202);
    assert.equal(again.body.templateID, one.templateID);
    assert.deepEqual(again.body.tags, ['default']);
    assert.notEqual(again.body.buildID, one.buildID);
    assert.equal((await start(one.templateID, again.body.buildID, { fromImage: 'debian:bookworm', steps: [{ type: 'RUN', args: ['exit 3'] }] })).status, 202);
    const req = cluster.findBuild(again.body.buildID)!.build.request;
    assert.deepEqual(req.source, { case: 'fromImage', value: 'debian:bookworm' });
    cluster.log(again.body.buildID, { message: 'boom', level: 'error', step: '1' });
    cluster.finish(again.body.buildID, { ok: false, message: 'step 1 exited with 3', step: '1' });
    const failed = await status(one.templateID, again.body.buildID);
    assert.equal(failed.body.status, 'error');
    assert.deepEqual(failed.body.reason, { message: 'step 1 exited with 3', step: '1' });

    const c = await api('POST', '/sandboxes', { templateID: 'keeper' });
    assert.equal(c.status, 201, 'the failed rebuild did not take `default` away from the ready build');
    assert.equal(cluster.calls.find((x) => x.method === 'Create' && x.sandboxId === c.body.sandboxID)?.buildId, one.buildID);
    await api('DELETE', `/sandboxes/${c.body.sandboxID}`);
    const d = await api('GET', `/templates/${one.templateID}?limit=1`);
    assert.equal(d.body.builds.length, 1);
    assert.equal(d.body.builds[0].buildID, again.body.buildID, 'newest first');
    const next = d.headers['x-next-token'] as string;
    assert.ok(next);
    const d2 = await api('GET', `/templates/${one.templateID}?limit=1&nextToken=${next}`);
    assert.deepEqual(d2.body.builds.map((x: { buildID: string }) => x.buildID), [one.buildID]);
    assert.equal(d2.headers['x-next-token'], undefined);
    assert.equal((await api('GET', '/templates')).body.find((t: { templateID: string }) => t.templateID === one.templateID).buildStatus, 'error');
  });

  test('a template whose build is not ready cannot start sandboxes (400); e2bdev/base means the built-in base', async () => {
    const r = await register({ name: 'pending' });
    assert.equal(r.status, 202);
    const c = await api('POST', '/sandboxes', { templateID: 'pending' });
    assert.equal(c.status, 400);
    assert.match(c.body.message, /no ready build yet .*is waiting/);
    assert.equal((await start(r.body.templateID, r.body.buildID, { fromImage: 'e2bdev/base:latest', steps: [] })).status, 202);
    const req = cluster.findBuild(r.body.buildID)!.build.request;
    assert.deepEqual(req.source, { case: 'fromBuildId', value: 'base' });
    assert.deepEqual([req.vcpu, req.memoryMb], [2, 1024], 'E2B defaults when the request names no resources');
    assert.match((await api('POST', '/sandboxes', { templateID: 'pending' })).body.message, /is building/);
  });

  test('the watcher finishes builds nobody polls; a build whose node vanished ends as an error', async () => {
    const r = await register({ name: 'background', cpuCount: 1, memoryMB: 256 });
    assert.equal((await start(r.body.templateID, r.body.buildID)).status, 202);
    assert.ok(!(await cp.cp.buildWatcher.runOnce()).includes(r.body.buildID), 'still building');
    cluster.finish(r.body.buildID, { ok: true });
    assert.ok((await cp.cp.buildWatcher.runOnce()).includes(r.body.buildID));
    const c = await api('POST', '/sandboxes', { templateID: 'background' });
    assert.equal(c.status, 201, JSON.stringify(c.body));
    await api('DELETE', `/sandboxes/${c.body.sandboxID}`);

    // node-b takes the next build (node-a refuses), then leaves the cluster.
    const b = cluster.addNode('node-b');
    cluster.nodes.get('node-a')!.failBuildWith = { code: Code.ResourceExhausted, message: 'draining' };
    const lost = await register({ name: 'orphan', cpuCount: 1, memoryMB: 256 });
    try {
      assert.equal((await start(lost.body.templateID, lost.body.buildID)).status, 202);
    } finally {
      cluster.nodes.get('node-a')!.failBuildWith = undefined;
    }
    assert.ok(b.builds.has(lost.body.buildID));
    cluster.nodes.delete('node-b');
    const now = Date.now();
    assert.deepEqual(await cp.cp.buildWatcher.runOnce(now), [], 'not before the grace period');
    assert.equal((await status(lost.body.templateID, lost.body.buildID)).body.status, 'building');
    assert.ok((await cp.cp.buildWatcher.runOnce(now + 60_000)).includes(lost.body.buildID));
    const st = await status(lost.body.templateID, lost.body.buildID);
    assert.equal(st.body.status, 'error');
    assert.match(st.body.reason.message, /node \(node-b\) left the cluster/);
  });

  test('build state survives a restart', async () => {
    const done = await built('survivor');
    const r = await register({ name: 'survivor-2' });
    await start(r.body.templateID, r.body.buildID);
    await cp.close();
    cp = await startControlPlane(env(), dir);
    assert.equal((await status(done.templateID, done.buildID)).body.status, 'ready');
    assert.equal((await status(r.body.templateID, r.body.buildID)).body.status, 'building');
    cluster.finish(r.body.buildID, { ok: true });
    assert.ok((await cp.cp.buildWatcher.runOnce()).includes(r.body.buildID));
    const c = await api('POST', '/sandboxes', { templateID: 'survivor' });
    assert.equal(c.status, 201);
    await api('DELETE', `/sandboxes/${c.body.sandboxID}`);
  });

  test('bad input on every template route is a clear 400', async () => {
    const { templateID, buildID } = (await register({ name: 'inputs' })).body as { templateID: string; buildID: string };
    const cases: Array<[string, string, unknown, RegExp]> = [
      ['POST', '/v3/templates', {}, /name is required/],
      ['POST', '/v3/templates', { name: 'Bad Name' }, /template name 'Bad Name' is invalid/],
      ['POST', '/v3/templates', { name: 'ok:bad tag' }, /tag 'bad tag' is invalid/],
      ['POST', '/v3/templates', { name: 'ok', tags: ['-x'] }, /tags\.0/],
      ['POST', '/v3/templates', { name: 'ok', cpuCount: 0 }, /cpuCount/],
      ['POST', '/v3/templates', { name: 'ok', cpuCount: 33 }, /cpuCount/],
      ['POST', '/v3/templates', { name: 'ok', memoryMB: 64 }, /memoryMB/],
      ['GET', `/templates/${templateID}/files/not-a-hash`, undefined, /hash must be 64 lowercase hex/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', steps: [{ type: 'FROB', args: [] }] }, /step 1 \(FROB\): unknown step type 'FROB'/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', steps: [{ type: 'RUN', args: ['ok'] }, { type: 'RUN', args: [] }] }, /step 2 \(RUN\): RUN takes/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', steps: [{ type: 'COPY', args: ['a', '/b'] }] }, /step 1 \(COPY\): COPY needs filesHash/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', steps: [{ type: 'COPY', args: ['a', '/b', '', '999'], filesHash: HASH }] }, /not an octal mode/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', steps: [{ type: 'ENV', args: ['A'] }] }, /ENV takes/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', steps: [{ type: 'WORKDIR', args: [] }] }, /WORKDIR takes/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', steps: [{ type: 'USER', args: ['bad user'] }] }, /USER takes/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', steps: [{ type: 'RUN', args: 'echo' }] }, /step 1 \(RUN\) args/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { steps: [] }, /exactly one of fromImage and fromTemplate/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'base', fromImage: 'x', steps: [] }, /exactly one of fromImage and fromTemplate/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'no-such-template', steps: [] }, /base template 'no-such-template' not found/],
      ['POST', `/v2/templates/${templateID}/builds/${buildID}`, { fromTemplate: 'inputs', steps: [] }, /base template 'inputs' has no ready build/],
      ['GET', `/templates/${templateID}/builds/${buildID}/status?logsOffset=-1`, undefined, /logsOffset/],
      ['GET', `/templates/${templateID}/builds/${buildID}/status?limit=1.5`, undefined, /limit must be a non-negative integer/],
      ['GET', `/templates/${templateID}/builds/${buildID}/logs?cursor=yesterday`, undefined, /cursor must be a non-negative integer/],
      ['GET', `/templates/${templateID}/builds/${buildID}/logs?direction=sideways`, undefined, /direction/],
      ['GET', `/templates/${templateID}/builds/${buildID}/status?level=loud`, undefined, /level/],
      ['GET', `/templates/${templateID}?limit=0`, undefined, /limit/],
      ['GET', `/templates/${templateID}?nextToken=zzz`, undefined, /invalid nextToken/],
      ['PATCH', `/v2/templates/${templateID}`, { public: 'yes' }, /public/],
      ['POST', '/templates/tags', { target: 'inputs', tags: [] }, /tags must not be empty/],
      ['POST', '/templates/tags', { target: 'Inputs!', tags: ['x'] }, /template name 'Inputs!' is invalid/],
      ['POST', '/templates/tags', { target: 'inputs', tags: ['x'] }, /has no ready build to tag/],
      ['DELETE', '/templates/tags', { tags: ['x'] }, /name/],
      ['POST', '/sandboxes', { templateID: 'inputs' }, /no ready build yet/],
    ];
    for (const [method, path, body, message] of cases) {
      const r = await api(method, path, body);
      assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 400);
      assert.match(r.body.message, message, `${method} ${path} ${JSON.stringify(body)}`);
    }
    assert.equal((await status(templateID, buildID)).body.status, 'waiting', 'no bad request started the build');
    const aws = await start(templateID, buildID, { fromImage: 'x/y:1', fromImageRegistry: { type: 'aws', awsAccessKeyId: 'a', awsSecretAccessKey: 'b', awsRegion: 'c' }, steps: [] });
    assert.equal(aws.status, 501);

    // A node that rejects the build: 400 with its reason; the build can be started again.
    cluster.nodes.get('node-a')!.failBuildWith = { code: Code.InvalidArgument, message: 'step 1: bad user' };
    try {
      const refused = await start(templateID, buildID, { fromImage: 'debian:bookworm', fromImageRegistry: { type: 'registry', username: 'u', password: 'p' }, steps: [] });
      assert.equal(refused.status, 400);
      assert.match(refused.body.message, /the cluster refused the build: .*step 1: bad user/);
    } finally {
      cluster.nodes.get('node-a')!.failBuildWith = undefined;
    }
    assert.equal((await start(templateID, buildID, { fromImage: 'debian:bookworm', fromImageRegistry: { type: 'registry', username: 'u', password: 'p' }, steps: [] })).status, 202);
    const req = cluster.findBuild(buildID)!.build.request;
    assert.deepEqual([req.fromImageRegistry?.username, req.fromImageRegistry?.password], ['u', 'p']);

    for (const [method, path] of [
      ['GET', `/templates/${templateID}/builds/00000000-0000-0000-0000-000000000000/status`],
      ['GET', '/templates/nope'],
      ['GET', '/templates/nope/tags'],
      ['DELETE', '/templates/nope'],
      ['PATCH', '/v2/templates/nope'],
      ['GET', `/templates/nope/files/${HASH}`],
      ['GET', '/templates/aliases/nope'],
    ] as const) {
      const r = await api(method, path, method === 'PATCH' ? { public: true } : undefined);
      assert.equal(r.status, 404, `${method} ${path}`);
    }
  });

  test("another team's template: 404 on every route and its alias; public ones can be used (as slug/name) but not changed", async () => {
    const mine = await built('private-one');
    const paths: Array<[string, string, unknown?]> = [
      ['GET', `/templates/${mine.templateID}`],
      ['GET', `/templates/private-one`],
      ['GET', `/templates/${mine.templateID}/builds/${mine.buildID}/status`],
      ['GET', `/templates/${mine.templateID}/builds/${mine.buildID}/logs`],
      ['GET', `/templates/${mine.templateID}/files/${HASH}`],
      ['GET', `/templates/${mine.templateID}/tags`],
      ['POST', `/v2/templates/${mine.templateID}/builds/${mine.buildID}`, { fromTemplate: 'base', steps: [] }],
      ['PATCH', `/v2/templates/${mine.templateID}`, { public: true }],
      ['DELETE', `/templates/${mine.templateID}`],
      ['POST', '/templates/tags', { target: 'private-one', tags: ['x'] }],
      ['DELETE', '/templates/tags', { name: 'private-one', tags: ['default'] }],
      ['POST', '/sandboxes', { templateID: 'private-one' }],
    ];
    for (const [method, path, body] of paths) {
      const r = await api(method, path, body, otherKey);
      assert.equal(r.status, 404, `${method} ${path} → ${r.status} ${JSON.stringify(r.body)}`);
    }
    assert.equal((await api('GET', '/templates/aliases/private-one', undefined, otherKey)).status, 404);
    assert.equal((await api('GET', '/templates/aliases/team%2Fprivate-one', undefined, otherKey)).status, 404, 'private: not even through the namespace');
    assert.ok(!(await api('GET', '/templates', undefined, otherKey)).body.some((t: { templateID: string }) => t.templateID === mine.templateID));
    assert.equal((await register({ name: 'base' })).status, 409, 'built-in names are reserved');

    const pub = await api('PATCH', `/v2/templates/${mine.templateID}`, { public: true });
    assert.deepEqual([pub.status, pub.body], [200, { names: ['private-one'] }]);
    // Public: reachable by another team as `<slug>/<name>` (the first team's slug is `team`), never by the bare name.
    assert.equal((await api('GET', '/templates/aliases/private-one', undefined, otherKey)).status, 404);
    assert.deepEqual((await api('GET', '/templates/aliases/team%2Fprivate-one', undefined, otherKey)).body, { templateID: mine.templateID, public: true });
    assert.equal((await api('POST', '/sandboxes', { templateID: 'private-one' }, otherKey)).status, 404);
    const used = await api('POST', '/sandboxes', { templateID: 'team/private-one' }, otherKey);
    assert.equal(used.status, 201, JSON.stringify(used.body));
    // …and built upon, but still not changed.
    const child = await register({ name: 'child' }, otherKey);
    assert.equal((await start(child.body.templateID, child.body.buildID, { fromTemplate: 'team/private-one:default', steps: [] }, otherKey)).status, 202);
    assert.deepEqual(cluster.findBuild(child.body.buildID)!.build.request.source, { case: 'fromBuildId', value: mine.buildID });
    assert.equal((await api('DELETE', `/templates/${mine.templateID}`, undefined, otherKey)).status, 404);
    assert.equal((await api('DELETE', `/templates/${mine.templateID}`)).status, 409, 'the other team’s sandbox uses it');
    await api('DELETE', `/sandboxes/${used.body.sandboxID}`, undefined, otherKey);

    assert.equal((await api('PATCH', `/templates/${mine.templateID}`, { public: false })).status, 200);
    assert.equal((await api('POST', '/sandboxes', { templateID: 'team/private-one' }, otherKey)).status, 404);
    assert.equal((await api('DELETE', '/templates/base')).status, 403);
    assert.equal((await api('PATCH', '/v2/templates/base', { public: false })).status, 403);
  });

  test('tags: assign, list, resolve, remove', async () => {
    const one = await built('tagged');
    const a = await api('POST', '/templates/tags', { target: 'tagged', tags: ['prod', 'v1'] });
    assert.deepEqual([a.status, a.body], [201, { buildID: one.buildID, tags: ['prod', 'v1'] }]);
    const two = await register({ name: 'tagged:v2' });
    await start(one.templateID, two.body.buildID);
    cluster.finish(two.body.buildID, { ok: true });
    await cp.cp.buildWatcher.runOnce();
    const moved = await api('POST', '/templates/tags', { target: 'tagged:v2', tags: ['prod'] });
    assert.equal(moved.body.buildID, two.body.buildID);
    const list = await api('GET', `/templates/${one.templateID}/tags`);
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.map((t: { tag: string; buildID: string }) => [t.tag, t.buildID]),
      [['default', one.buildID], ['prod', two.body.buildID], ['v1', one.buildID], ['v2', two.body.buildID]],
    );
    assert.ok(list.body.every((t: { createdAt: string }) => !Number.isNaN(Date.parse(t.createdAt))));
    const c = await api('POST', '/sandboxes', { templateID: 'tagged:prod' });
    assert.equal(cluster.calls.find((x) => x.method === 'Create' && x.sandboxId === c.body.sandboxID)?.buildId, two.body.buildID);
    await api('DELETE', `/sandboxes/${c.body.sandboxID}`);

    assert.equal((await api('DELETE', '/templates/tags', { name: 'tagged', tags: ['v1', 'nope'] })).status, 404, 'unknown tag: nothing removed');
    assert.equal((await api('DELETE', '/templates/tags', { name: 'tagged', tags: ['v1'] })).status, 204);
    assert.equal((await api('POST', '/sandboxes', { templateID: 'tagged:v1' })).status, 404);
    assert.deepEqual((await api('GET', '/templates/tagged/tags')).body.map((t: { tag: string }) => t.tag), ['default', 'prod', 'v2']);
    assert.equal((await api('GET', '/templates/base/tags')).body[0].tag, 'default');
  });

  test('delete: refused while a sandbox runs it or a node still uses it; then artifacts and rows go', async () => {
    const t = await built('doomed');
    const sbx = await api('POST', '/sandboxes', { templateID: 'doomed' });
    assert.equal(sbx.status, 201);
    const refused = await api('DELETE', `/templates/${t.templateID}`);
    assert.equal(refused.status, 409);
    assert.match(refused.body.message, /used by 1 running or paused sandbox/);
    // paused, its snapshot still needs the build's layers; a snapshot taken from it too
    assert.equal((await api('POST', `/sandboxes/${sbx.body.sandboxID}/pause`)).status, 204);
    assert.equal((await api('DELETE', `/templates/${t.templateID}`)).status, 409);
    assert.equal((await api('POST', `/sandboxes/${sbx.body.sandboxID}/connect`, { timeout: 60 })).status, 201);
    const resumed = cluster.calls.filter((x) => x.method === 'Create' && x.sandboxId === sbx.body.sandboxID).at(-1);
    assert.deepEqual([resumed?.templateId, resumed?.buildId], [t.templateID, t.buildID], 'a user template resumes with its build id');
    const snap = await api('POST', `/sandboxes/${sbx.body.sandboxID}/snapshots`, {});
    assert.equal(snap.status, 201);
    assert.equal((await api('DELETE', `/sandboxes/${sbx.body.sandboxID}`)).status, 204);
    const withSnapshot = await api('DELETE', `/templates/${t.templateID}`);
    assert.equal(withSnapshot.status, 409);
    assert.match(withSnapshot.body.message, /has 1 snapshot taken from its sandboxes/);
    assert.equal((await api('DELETE', `/templates/${snap.body.snapshotID}`)).status, 204);

    cluster.nodes.get('node-a')!.failDeleteWith = Code.FailedPrecondition;
    try {
      assert.equal((await api('DELETE', '/templates/doomed')).status, 409);
    } finally {
      cluster.nodes.get('node-a')!.failDeleteWith = undefined;
    }
    assert.equal((await api('DELETE', '/templates/doomed')).status, 204);
    const del = lastCall((c) => c.method === 'DeleteBuilds');
    assert.deepEqual(del?.body && { templateId: (del.body as { templateId: string }).templateId, buildIds: (del.body as { buildIds: string[] }).buildIds }, { templateId: t.templateID, buildIds: [t.buildID] });
    assert.ok(!cluster.storedBuilds.has(t.buildID));
    assert.equal((await api('GET', `/templates/${t.templateID}`)).status, 404);
    assert.equal((await api('GET', '/templates/aliases/doomed')).status, 404);
    assert.equal((await api('POST', '/sandboxes', { templateID: 'doomed' })).status, 404);
    // The name is free again.
    assert.equal((await register({ name: 'doomed' }, otherKey)).status, 202);
    // A template whose build never started has nothing on the nodes to delete.
    const calls = cluster.calls.filter((c) => c.method === 'DeleteBuilds').length;
    const never = await register({ name: 'never-built' });
    assert.equal((await api('DELETE', `/templates/${never.body.templateID}`)).status, 204);
    assert.equal(cluster.calls.filter((c) => c.method === 'DeleteBuilds').length, calls);
  });

  test('status of a finished build is answered from cluster storage once its node dropped it', async () => {
    const t = await built('from-storage');
    const node = cluster.findBuild(t.buildID)!.node;
    node.builds.delete(t.buildID);
    assert.equal(cluster.storedBuilds.get(t.buildID)?.state, BuildState.READY);
    const st = await status(t.templateID, t.buildID);
    assert.equal(st.body.status, 'ready');
  });
});
