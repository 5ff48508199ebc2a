// The Secret API's control-plane half over real HTTP against the wire-level fake cluster (which has no
// `/v1/secrets`): a value is sealed to the key the cluster's nodes publish before anything is written, and a
// cluster that cannot store it leaves no row behind (the name stays free); bad input is refused without quoting
// the value. The whole path through a real cluster is packages/e2e/test/secrets.test.ts.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { clusterSecretKeys } from '@cove/egress';
import { call, setupTeam, startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';
import { startFakeCluster, type FakeCluster } from './fixtures/fake-cluster.js';

const VALUE = 'cove-cp-secret-value-7f3a9c';

describe('Secret API: control plane', () => {
  let cp: RunningControlPlane;
  let cluster: FakeCluster;
  let key: string;

  before(async () => {
    cluster = await startFakeCluster();
    cluster.addNode('node-a');
    cp = await startControlPlane();
    ({ key } = await setupTeam(cp.url, cluster.endpoint, cluster.token));
  });
  after(async () => {
    await cp.close();
    await cluster.close();
  });

  test('no node publishes a key: 502 cluster_unavailable, nothing written', async () => {
    const r = await call(cp.url, 'POST', '/secrets', { key, body: { name: 'a', value: VALUE } });
    assert.equal(r.status, 502, JSON.stringify(r.body));
    assert.equal((await call(cp.url, 'GET', '/secrets/a', { key })).status, 404);
  });

  test('nodes that disagree on the key: 502; a failed store in the cluster takes the row back', async () => {
    const n = cluster.addNode('node-b');
    n.secretsPublicKey = clusterSecretKeys('k1').publicKey;
    const n2 = cluster.addNode('node-c');
    n2.secretsPublicKey = clusterSecretKeys('k2').publicKey;
    assert.equal((await call(cp.url, 'POST', '/secrets', { key, body: { name: 'a', value: VALUE } })).status, 502);
    n2.secretsPublicKey = n.secretsPublicKey;
    // One key now; the fake edge has no /v1/secrets, so the store fails after the row claimed the name.
    const r = await call(cp.url, 'POST', '/secrets', { key, body: { name: 'a', value: VALUE } });
    assert.equal(r.status, 502, JSON.stringify(r.body));
    assert.ok(!JSON.stringify(r.body).includes(VALUE));
    assert.equal((await call(cp.url, 'GET', '/secrets/a', { key })).status, 404, 'the row was taken back');
    assert.deepEqual((await call(cp.url, 'GET', '/secrets', { key })).body, []);
  });

  test('bad input: 400 naming the field, never quoting the value', async () => {
    for (const body of [{ name: 'a', value: `${VALUE}\r\nx: y` }, { name: 'a', value: VALUE + 'v'.repeat(9000) }, { name: 'sec_x', value: VALUE }, { name: '', value: VALUE }]) {
      const r = await call(cp.url, 'POST', '/secrets', { key, body });
      assert.equal(r.status, 400);
      assert.match(r.body.message, /^invalid body: (name|value): /);
      assert.ok(!r.body.message.includes(VALUE));
    }
    assert.equal((await call(cp.url, 'GET', '/secrets/nope', { key })).body.error_code, 'secret_not_found');
  });
});
