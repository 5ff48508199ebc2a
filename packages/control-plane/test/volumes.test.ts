// Team volumes through the unchanged e2b SDK (2.51) against a real control plane: create, connect, getInfo, list,
// destroy; names are per team and another team's volume is absent (404 → VolumeNotFoundError / false), never
// visible or destroyable. The content API and mounts are the cluster's (docs/volumes.md).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Volume, VolumeError, VolumeNotFoundError } from 'e2b';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
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
