import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidImageRef, parseImageRef } from '../src/index.js';

test('docker-style normalisation', () => {
  assert.deepEqual(parseImageRef('debian:bookworm'), { repository: 'library/debian', reference: 'bookworm', isDigest: false, tag: 'bookworm' });
  assert.deepEqual(parseImageRef('debian'), { repository: 'library/debian', reference: 'latest', isDigest: false, tag: 'latest' });
  assert.equal(parseImageRef('docker.io/debian:12').repository, 'library/debian');
  assert.equal(parseImageRef('docker.io/library/debian:12').repository, 'library/debian');
  assert.equal(parseImageRef('index.docker.io/myorg/app:v1.2').repository, 'myorg/app');
  assert.equal(parseImageRef('myorg/app').repository, 'myorg/app');
  assert.equal(parseImageRef('myorg/app').reference, 'latest');
  // Other registries keep their host as the first component of the mirrored name.
  assert.equal(parseImageRef('ghcr.io/owner/tool:1').repository, 'ghcr.io/owner/tool');
  assert.equal(parseImageRef('python:3.12-slim').reference, '3.12-slim');
});

test('digests win over tags', () => {
  const d = 'sha256:' + 'a'.repeat(64);
  assert.deepEqual(parseImageRef(`debian@${d}`), { repository: 'library/debian', reference: d, isDigest: true });
  const both = parseImageRef(`debian:12@${d}`);
  assert.equal(both.reference, d);
  assert.equal(both.isDigest, true);
  assert.equal(both.tag, '12');
});

test('bad references are refused with the reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['Debian:12', /lowercase/],
    ['debian:', /bad tag/],
    ['debian:bad tag', /whitespace/],
    ['debian@sha256:123', /digest/],
    ['debian@md5:' + 'a'.repeat(32), /digest/],
    ['localhost:5000/app:1', /port/],
    ['a//b', /path component/],
    ['-lead/app', /path component/],
    [':tag', /no repository/],
    ['debian:' + 'x'.repeat(129), /bad tag/],
  ];
  for (const [ref, why] of cases) {
    assert.throws(() => parseImageRef(ref), (err: unknown) => err instanceof InvalidImageRef && why.test((err as Error).message), ref);
  }
});
