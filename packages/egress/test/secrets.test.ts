// Sealed secrets: only the cluster key opens them, only for the team and name they were sealed for, and a blob from
// storage (which the sandbox's tenant does not control, but the edge and storage could) is never trusted.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clusterSecretKeys, isSealedSecret, openSecret, sealSecret, SecretOpenError, secretNameProblem, secretValueProblem } from '../src/index.js';

const keys = clusterSecretKeys('cluster-key-a');

test('a sealed value opens with the cluster key for its team and name, and carries no plaintext', () => {
  const blob = sealSecret(keys.publicKey, { teamId: 't1', name: 'api-key', version: 3 }, 'sk-live-123456');
  assert.ok(isSealedSecret(blob));
  assert.ok(!blob.includes('sk-live-123456'));
  assert.deepEqual(openSecret(keys.privateKey, 't1', 'API-Key', blob), { version: 3, value: 'sk-live-123456' });
  // Derivation is stable: another node of the cluster opens it too.
  assert.equal(clusterSecretKeys('cluster-key-a').publicKey, keys.publicKey);
});

test('another team, another name, another cluster key or a tampered blob does not open', () => {
  const blob = sealSecret(keys.publicKey, { teamId: 't1', name: 'api-key', version: 1 }, 'v');
  assert.throws(() => openSecret(keys.privateKey, 't2', 'api-key', blob), SecretOpenError);
  assert.throws(() => openSecret(keys.privateKey, 't1', 'other', blob), SecretOpenError);
  assert.throws(() => openSecret(clusterSecretKeys('cluster-key-b').privateKey, 't1', 'api-key', blob), SecretOpenError);
  const j = JSON.parse(blob) as { version: number; ct: string };
  assert.throws(() => openSecret(keys.privateKey, 't1', 'api-key', JSON.stringify({ ...j, version: 2 })), SecretOpenError);
  const ct = Buffer.from(j.ct, 'base64');
  ct[0] = ct[0]! ^ 1;
  assert.throws(() => openSecret(keys.privateKey, 't1', 'api-key', JSON.stringify({ ...j, ct: ct.toString('base64') })), SecretOpenError);
  assert.throws(() => openSecret(keys.privateKey, 't1', 'api-key', 'x'.repeat(17 * 1024)), SecretOpenError);
  assert.throws(() => openSecret(keys.privateKey, 't1', 'api-key', '{"v":1}'), SecretOpenError);
  assert.throws(() => sealSecret('AAAA', { teamId: 't1', name: 'n', version: 1 }, 'v'), RangeError);
});

test('names and values: the SDK grammar, bounds, header safety', () => {
  assert.equal(secretNameProblem('openai-api-key'), undefined);
  for (const bad of ['', 'a{b', 'a}b', 'a\nb', 'a b', 'sec_x', 'SEC_x', 'n'.repeat(129)]) assert.ok(secretNameProblem(bad), bad);
  assert.equal(secretValueProblem('v'), undefined);
  for (const bad of ['', 'a\r\nX-Injected: 1', 'a\0', 'v'.repeat(8 * 1024 + 1)]) assert.ok(secretValueProblem(bad), JSON.stringify(bad.slice(0, 20)));
});
