// Team volumes through the unchanged e2b SDK (2.51) against a real control plane: create, connect, getInfo, list,
// destroy; names are per team and another team's volume is absent (404 → VolumeNotFoundError / false), never
// visible or destroyable. The content API and mounts are the cluster's (docs/volumes.md).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Volume, VolumeError, VolumeNotFoundError } from 'e2b';
import { ADMIN_TOKEN, call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

describe('volumes through the unchanged e2b SDK', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let keyA: string;
  let keyB: string;
  const saved = { url: process.env.E2B_API_URL, key: process.env.E2B_API_KEY };

  before(async () => {
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane();
    ({ key: keyA } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'team-a' }));
    ({ key: keyB } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'team-b' }));
    process.env.E2B_API_URL = cp.url;
    process.env.E2B_API_KEY = keyA;
  });

  after(async () => {
    if (saved.url === undefined) delete process.env.E2B_API_URL;
    else process.env.E2B_API_URL = saved.url;
    if (saved.key === undefined) delete process.env.E2B_API_KEY;
    else process.env.E2B_API_KEY = saved.key;
    await cp.close();
    await cluster.close();
  });

  test('create, connect, getInfo, list, destroy', async () => {
    const vol = await Volume.create('data-1');
    assert.equal(vol.name, 'data-1');
    assert.match(vol.volumeId, /^[0-9a-f-]{36}$/);
    assert.match(vol.token, /^[0-9a-f]{64}$/);

    const info = await Volume.getInfo(vol.volumeId);
    assert.deepEqual({ id: info.volumeId, name: info.name, token: info.token }, { id: vol.volumeId, name: 'data-1', token: vol.token });
    const again = await Volume.connect(vol.volumeId);
    assert.equal(again.name, 'data-1');
    assert.equal(again.token, vol.token);

    const other = await Volume.create('data-2');
    const listed = await Volume.list();
    assert.deepEqual(
      listed.map((v) => v.name),
      ['data-1', 'data-2'],
    );
    // The list never carries tokens (E2B's `Volume` shape).
    assert.equal((listed[0] as Record<string, unknown>).token, undefined);

    assert.equal(await Volume.destroy(other.volumeId), true);
    assert.equal(await Volume.destroy(other.volumeId), false);
    await assert.rejects(Volume.getInfo(other.volumeId), VolumeNotFoundError);
    assert.deepEqual((await Volume.list()).map((v) => v.name), ['data-1']);
    await Volume.destroy(vol.volumeId);
  });

  test("another team's volume is absent: not listed, getInfo/connect 404, destroy false and the volume survives", async () => {
    const mine = await Volume.create('private', { apiKey: keyA });
    const b = { apiKey: keyB };
    assert.deepEqual(await Volume.list(b), []);
    await assert.rejects(Volume.getInfo(mine.volumeId, b), VolumeNotFoundError);
    await assert.rejects(Volume.connect(mine.volumeId, b), VolumeNotFoundError);
    assert.equal(await Volume.destroy(mine.volumeId, b), false);
    assert.equal((await Volume.getInfo(mine.volumeId, { apiKey: keyA })).name, 'private');
    // The same name in another team is that team's own volume.
    const theirs = await Volume.create('private', b);
    assert.notEqual(theirs.volumeId, mine.volumeId);
    const raw = await call(cp.url, 'GET', `/volumes/${mine.volumeId}`, { key: keyB });
    assert.equal(raw.status, 404);
    assert.equal(raw.body.error_code, 'volume_not_found');
    await Volume.destroy(theirs.volumeId, b);
    await Volume.destroy(mine.volumeId, { apiKey: keyA });
  });

  test('a taken name → 409 volume_name_taken; bad names and bodies → 400 naming the field', async () => {
    const v = await Volume.create('dup');
    await assert.rejects(Volume.create('dup'), (err: Error) => err instanceof VolumeError && /already exists/.test(err.message));
    const dup = await call(cp.url, 'POST', '/volumes', { key: keyA, body: { name: 'dup' } });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.error_code, 'volume_name_taken');
    for (const body of [{ name: '../etc' }, { name: '' }, { name: 'A' }, { name: 'x'.repeat(65) }, {}, { name: 'ok', extra: 1 }, { name: 7 }]) {
      const r = await call(cp.url, 'POST', '/volumes', { key: keyA, body });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.message, /invalid body/);
    }
    const noKey = await call(cp.url, 'GET', '/volumes');
    assert.equal(noKey.status, 401);
    assert.deepEqual((await Volume.list()).map((x) => x.name), ['dup']);
    await Volume.destroy(v.volumeId);
  });
});

describe('volume mounts on Sandbox.create (control plane side; the node mounts, see e2e volumes.test)', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let keyA: string;
  let keyB: string;
  const saved = { url: process.env.E2B_API_URL, key: process.env.E2B_API_KEY };

  before(async () => {
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane();
    ({ key: keyA } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'team-a', maxConcurrentSandboxes: 20 }));
    ({ key: keyB } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'team-b' }));
    process.env.E2B_API_URL = cp.url;
    process.env.E2B_API_KEY = keyA;
  });

  after(async () => {
    if (saved.url === undefined) delete process.env.E2B_API_URL;
    else process.env.E2B_API_URL = saved.url;
    if (saved.key === undefined) delete process.env.E2B_API_KEY;
    else process.env.E2B_API_KEY = saved.key;
    await cp.close();
    await cluster.close();
  });

  const createWith = (key: string, body: Record<string, unknown>) => call(cp.url, 'POST', '/v2/sandboxes', { key, body: { templateID: 'base', ...body } });

  test('the node gets the volume by id with its quota; a second running sandbox, a destroy, a pause and a fork → 409', async () => {
    const vol = await Volume.create('work');
    const first = await createWith(keyA, { volumeMounts: [{ name: 'work', path: '/mnt/work' }] });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const info = await call(cp.url, 'GET', `/sandboxes/${first.body.sandboxID}`, { key: keyA });
    assert.deepEqual(info.body.volumeMounts, [{ name: 'work', path: '/mnt/work' }]);
    const sent = cluster.calls.filter((c) => c.method === 'Create').at(-1)!;
    assert.deepEqual(sent.volumeMounts, [{ volumeId: vol.volumeId, path: '/mnt/work', quotaBytes: 10 * 1024 ** 3 }]);

    const second = await createWith(keyA, { volumeMounts: [{ name: 'work', path: '/data' }] });
    assert.equal(second.status, 409);
    assert.equal(second.body.error_code, 'volume_in_use');
    const creates = cluster.calls.filter((c) => c.method === 'Create').length;

    const destroy = await call(cp.url, 'DELETE', `/volumes/${vol.volumeId}`, { key: keyA });
    assert.equal(destroy.status, 409);
    assert.equal(destroy.body.error_code, 'volume_in_use');
    assert.match(destroy.body.message, new RegExp(first.body.sandboxID));
    await assert.rejects(Volume.destroy(vol.volumeId), VolumeError);

    const pause = await call(cp.url, 'POST', `/sandboxes/${first.body.sandboxID}/pause`, { key: keyA });
    assert.equal(pause.status, 409);
    assert.equal(pause.body.error_code, 'sandbox_has_volumes');
    const fork = await call(cp.url, 'POST', `/sandboxes/${first.body.sandboxID}/fork`, { key: keyA, body: { count: 1 } });
    assert.equal(fork.status, 409);
    assert.equal(fork.body.error_code, 'sandbox_has_volumes');
    const snapshot = await call(cp.url, 'POST', `/sandboxes/${first.body.sandboxID}/snapshots`, { key: keyA, body: {} });
    assert.equal(snapshot.status, 409);
    assert.equal(snapshot.body.error_code, 'sandbox_has_volumes');
    // The content API's check (the edge asks before serving /volumecontent): held → 409.
    const held = await call(cp.url, 'POST', `/cluster/v1/volumes/${vol.volumeId}/content-access`, { headers: { authorization: `Bearer ${cluster.token}` }, body: { token: vol.token } });
    assert.equal(held.status, 409);
    assert.equal(held.body.error_code, 'volume_in_use');
    // None of the refusals reached a node.
    assert.equal(cluster.calls.filter((c) => c.method === 'Create').length, creates);
    assert.equal(cluster.calls.filter((c) => c.method === 'Pause' || c.method === 'Snapshot').length, 0);

    // Once that sandbox has ended, the volume is free: a new sandbox takes it, and then it can be destroyed.
    const kill = await call(cp.url, 'DELETE', `/sandboxes/${first.body.sandboxID}`, { key: keyA });
    assert.equal(kill.status, 204);
    const third = await createWith(keyA, { volumeMounts: [{ name: 'work', path: '/data' }] });
    assert.equal(third.status, 201, JSON.stringify(third.body));
    assert.equal((await call(cp.url, 'DELETE', `/sandboxes/${third.body.sandboxID}`, { key: keyA })).status, 204);
    assert.equal(await Volume.destroy(vol.volumeId), true);
  });

  test("another team's volume name, bad paths, duplicates and autoPause are refused before any node is asked", async () => {
    await Volume.create('theirs', { apiKey: keyB });
    await Volume.create('mine');
    await Volume.create('mine2');
    const creates = () => cluster.calls.filter((c) => c.method === 'Create').length;
    const before = creates();
    const other = await createWith(keyA, { volumeMounts: [{ name: 'theirs', path: '/data' }] });
    assert.equal(other.status, 404);
    assert.equal(other.body.error_code, 'volume_not_found');
    for (const path of ['data', '/', '/data/', '/a/../etc', '/proc/x', '/sys', '/dev/shm', '/opt/cove/envd', '/a b', '/a,b', '/a:b', '/a\\b', '/a\nb', '//x']) {
      const r = await createWith(keyA, { volumeMounts: [{ name: 'mine', path }] });
      assert.equal(r.status, 400, path);
      assert.match(r.body.message, /volumeMounts\[0\]\.path/);
    }
    const twice = await createWith(keyA, { volumeMounts: [{ name: 'mine', path: '/a' }, { name: 'mine', path: '/b' }] });
    assert.equal(twice.status, 400);
    const nested = await createWith(keyA, { volumeMounts: [{ name: 'mine', path: '/a' }, { name: 'mine2', path: '/a/b' }] });
    assert.equal(nested.status, 400);
    const pausing = await createWith(keyA, { autoPause: true, volumeMounts: [{ name: 'mine', path: '/a' }] });
    assert.equal(pausing.status, 400);
    assert.match(pausing.body.message, /autoPause/);
    assert.equal(creates(), before);
    // Nothing was left attached by the refusals: the volumes destroy cleanly.
    for (const v of await Volume.list()) assert.equal(await Volume.destroy(v.volumeId), true);
  });

  test("the operator's quota (admin only) is what the node is told to make the image with", async () => {
    const vol = await Volume.create('small');
    const byTenant = await call(cp.url, 'PATCH', `/admin/volumes/${vol.volumeId}`, { key: keyA, body: { quotaMb: 16 } });
    assert.ok(byTenant.status === 401 || byTenant.status === 403, String(byTenant.status));
    for (const body of [{ quotaMb: 1 }, { quotaMb: 'x' }, {}]) {
      assert.equal((await call(cp.url, 'PATCH', `/admin/volumes/${vol.volumeId}`, { admin: ADMIN_TOKEN, body })).status, 400);
    }
    const r = await call(cp.url, 'PATCH', `/admin/volumes/${vol.volumeId}`, { admin: ADMIN_TOKEN, body: { quotaMb: 16 } });
    assert.equal(r.status, 200);
    assert.equal(r.body.quotaMb, 16);
    const missing = await call(cp.url, 'PATCH', '/admin/volumes/00000000-0000-4000-8000-000000000000', { admin: ADMIN_TOKEN, body: { quotaMb: 16 } });
    assert.equal(missing.status, 404);
    const sbx = await createWith(keyA, { volumeMounts: [{ name: 'small', path: '/data' }] });
    assert.equal(sbx.status, 201);
    assert.equal(cluster.calls.filter((c) => c.method === 'Create').at(-1)!.volumeMounts![0]!.quotaBytes, 16 * 1024 * 1024);
    await call(cp.url, 'DELETE', `/sandboxes/${sbx.body.sandboxID}`, { key: keyA });
    assert.equal(await Volume.destroy(vol.volumeId), true);
  });

  test('a create the node refuses leaves the volume free', async () => {
    const vol = await Volume.create('flaky');
    const node = cluster.nodes.get('node-a')!;
    node.failCreateWith = 13; // INTERNAL
    const r = await createWith(keyA, { volumeMounts: [{ name: 'flaky', path: '/data' }] });
    delete node.failCreateWith;
    assert.ok(r.status >= 500, String(r.status));
    assert.equal(await Volume.destroy(vol.volumeId), true);
  });
});

describe('the content API check the edge makes (cluster token)', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let otherCluster: FakeCluster;
  let keyA: string;
  let keyB: string;

  before(async () => {
    cluster = await startFakeCluster();
    otherCluster = await startFakeCluster('other-cluster-token-0123456789ab');
    cp = await startControlPlane();
    ({ key: keyA } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'team-a' }));
    ({ key: keyB } = await setupTeam(cp.url, cluster.endpoint, cluster.token, { name: 'team-b' }));
    await setupTeam(cp.url, otherCluster.endpoint, otherCluster.token, { name: 'team-c' });
  });

  after(async () => {
    await cp.close();
    await cluster.close();
    await otherCluster.close();
  });

  const access = (clusterToken: string | undefined, volumeId: string, token: unknown) =>
    call(cp.url, 'POST', `/cluster/v1/volumes/${volumeId}/content-access`, {
      headers: clusterToken ? { authorization: `Bearer ${clusterToken}` } : {},
      body: { token },
    });

  test("the volume's own token opens it; another team's token, another cluster, no cluster token do not", async () => {
    const mine = await Volume.create('content', { apiKey: keyA, apiUrl: cp.url });
    const theirs = await Volume.create('content', { apiKey: keyB, apiUrl: cp.url });
    assert.equal(mine.domain, 'cove.test', "the volume's domain is its cluster's sandbox domain");

    const ok = await access(cluster.token, mine.volumeId, mine.token);
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { volumeID: mine.volumeId, quotaBytes: 10 * 1024 ** 3 });
    // Another team's token on this volume's id: the answer of an unknown id.
    const forged = await access(cluster.token, mine.volumeId, theirs.token);
    assert.equal(forged.status, 404);
    assert.equal(forged.body.error_code, 'volume_not_found');
    const unknown = await access(cluster.token, '00000000-0000-4000-8000-000000000000', mine.token);
    assert.equal(unknown.status, 404);
    // The right token through another cluster's edge: not that cluster's volume.
    const elsewhere = await access(otherCluster.token, mine.volumeId, mine.token);
    assert.equal(elsewhere.status, 404);
    assert.equal((await access(undefined, mine.volumeId, mine.token)).status, 401);
    assert.equal((await access('not-a-cluster-token', mine.volumeId, mine.token)).status, 403);
    assert.equal((await access(cluster.token, mine.volumeId, '')).status, 400);
    assert.equal((await access(cluster.token, mine.volumeId, 42)).status, 400);

    // The sweep's list: this cluster's destroyed volumes only — a live one never, a refused destroy never.
    const destroyed = (token: string) => call(cp.url, 'GET', '/cluster/v1/volumes/destroyed', { headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual((await destroyed(cluster.token)).body.volumeIDs, []);
    assert.equal(await Volume.destroy(mine.volumeId, { apiKey: keyB, apiUrl: cp.url }), false, "another team's destroy does nothing");
    assert.deepEqual((await destroyed(cluster.token)).body.volumeIDs, []);
    assert.equal(await Volume.destroy(theirs.volumeId, { apiKey: keyB, apiUrl: cp.url }), true);
    assert.deepEqual((await destroyed(cluster.token)).body.volumeIDs, [theirs.volumeId]);
    assert.deepEqual((await destroyed(otherCluster.token)).body.volumeIDs, []);
  });
});
