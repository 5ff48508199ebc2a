import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { bearerToken, deriveNodeToken, tokenHash, tokenMatchesHash, tokensEqual } from '../src/index.js';

test('tokensEqual: equal only for identical strings, whatever the lengths', () => {
  assert.equal(tokensEqual('secret-token', 'secret-token'), true);
  assert.equal(tokensEqual('secret-token', 'secret-tokeN'), false);
  assert.equal(tokensEqual('secret', 'secret-token'), false);
  assert.equal(tokensEqual('', 'x'), false);
});

test('tokenHash / tokenMatchesHash round trip; malformed hashes never match', () => {
  const h = tokenHash('traffic');
  assert.match(h, /^[0-9a-f]{64}$/);
  assert.equal(tokenMatchesHash('traffic', h), true);
  assert.equal(tokenMatchesHash('other', h), false);
  assert.equal(tokenMatchesHash('traffic', 'zz'), false);
  assert.equal(tokenMatchesHash('traffic', ''), false);
});

test('bearerToken extracts the token of a Bearer header only', () => {
  assert.equal(bearerToken('Bearer abc'), 'abc');
  assert.equal(bearerToken('bearer  abc '), 'abc');
  assert.equal(bearerToken('Basic abc'), undefined);
  assert.equal(bearerToken('Bearer a b'), undefined);
  assert.equal(bearerToken(undefined), undefined);
});

test('deriveNodeToken: HMAC-SHA256(key, "cove-node:" + id), distinct per node and per key', () => {
  const key = 'k'.repeat(64);
  assert.equal(deriveNodeToken(key, 'node-a'), createHmac('sha256', key).update('cove-node:node-a').digest('hex'));
  assert.notEqual(deriveNodeToken(key, 'node-a'), deriveNodeToken(key, 'node-b'));
  assert.notEqual(deriveNodeToken(key, 'node-a'), deriveNodeToken('j'.repeat(64), 'node-a'));
});
