import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bearerToken, tokenHash, tokenMatchesHash, tokensEqual } from '../src/index.js';

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
