// Upload URLs minted for an S3 store with a known size are presigned PUTs with that Content-Length signed; the
// client here is undici, sending a plain body with a content-length (E2B's SDK never uses chunked encoding for
// these uploads). Without a size no presigned URL is minted at all: it would be unbounded.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { BuildFileUploads, S3BlobStore } from '../src/index.js';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '@cove/test-support/s3-server';
import { patternBytes, readAll, silentLogger } from './fixtures/streams.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('presigned PUT upload URLs (S3 protocol)', () => {
  let server: S3Server;
  let store: S3BlobStore;
  let uploads: BuildFileUploads;

  before(async () => {
    server = await startS3Server('cove-build-cache');
    store = new S3BlobStore({
      bucket: server.bucket,
      prefix: 'cluster-1',
      endpoint: server.endpoint,
      forcePathStyle: true,
      credentials: S3RVER_CREDENTIALS,
      logger: silentLogger,
    });
    uploads = new BuildFileUploads({ store });
  });
  after(async () => {
    store.close();
    await server.stop();
  });

  async function put(url: string, body: Buffer, length = body.length): Promise<number> {
    const res = await request(url, { method: 'PUT', body, headers: { 'content-length': String(length) } });
    await res.body.dump();
    return res.statusCode;
  }

  it('mints a URL that uploads exactly the tarball, then reports it present', async () => {
    const tar = await patternBytes(80_000, 41);
    const hash = sha(tar);
    const answer = await uploads.createUploadUrl({ scope: 'team-a', hash, ttlSeconds: 1800, size: tar.length });
    assert.deepEqual(answer.headers, { 'content-length': String(tar.length) });
    assert.ok(answer.url.startsWith(`${server.endpoint}/${server.bucket}/cluster-1/files/team-a/${hash}.tar?`));
    assert.match(answer.url, /X-Amz-Expires=1800/);
    assert.equal(await put(answer.url, tar), 200);
    assert.equal(await uploads.present('team-a', hash), true);
    assert.deepEqual(await readAll(await store.get(`files/team-a/${hash}.tar`)), tar);
    assert.deepEqual(await uploads.describe({ scope: 'team-a', hash, ttlSeconds: 1800 }), { present: true });
  });

  it('rejects a presigned URL re-pointed at another object', async () => {
    const tar = Buffer.from('not yours');
    const hash = sha(tar);
    const { url } = await uploads.createUploadUrl({ scope: 'team-a', hash, ttlSeconds: 60, size: tar.length });
    const retargeted = url.replace('/files/team-a/', '/files/team-b/');
    assert.equal(await put(retargeted, tar), 403);
    assert.equal(await uploads.present('team-b', hash), false);
    const tampered = url.replace(/X-Amz-Expires=\d+/, 'X-Amz-Expires=604800');
    assert.equal(await put(tampered, tar), 403);
    assert.equal(await uploads.present('team-a', hash), false);
  });

  it('rejects an expired presigned URL', async () => {
    const past = new S3BlobStore({
      bucket: server.bucket,
      prefix: 'cluster-1',
      endpoint: server.endpoint,
      forcePathStyle: true,
      credentials: S3RVER_CREDENTIALS,
      logger: silentLogger,
      now: () => new Date(Date.now() - 3_600_000),
    });
    try {
      const tar = Buffer.from('too late');
      const hash = sha(tar);
      const { url, expiresAt } = await new BuildFileUploads({ store: past }).createUploadUrl({
        scope: 'team-a',
        hash,
        ttlSeconds: 60,
        size: tar.length,
      });
      assert.ok(expiresAt.getTime() < Date.now());
      assert.equal(await put(url, tar), 403);
      assert.equal(await uploads.present('team-a', hash), false);
    } finally {
      past.close();
    }
  });

  it('mints no presigned URL without a size, nor for a size beyond maxSize', async () => {
    const hash = sha(Buffer.from('unsized'));
    await assert.rejects(uploads.createUploadUrl({ scope: 'team-a', hash, ttlSeconds: 60 }), (err: unknown) => (err as { code?: string }).code === 'unsupported');
    await assert.rejects(uploads.describe({ scope: 'team-a', hash, ttlSeconds: 60 }), (err: unknown) => (err as { code?: string }).code === 'unsupported');
    const small = new BuildFileUploads({ store, maxSize: 1024 });
    await assert.rejects(small.createUploadUrl({ scope: 'team-a', hash, ttlSeconds: 60, size: 1025 }), RangeError);
    const ok = await small.createUploadUrl({ scope: 'team-a', hash, ttlSeconds: 60, size: 1024 });
    // The signed length is the bound: a body one byte longer (or shorter) is refused, nothing is stored.
    assert.equal(await put(ok.url, Buffer.alloc(1025, 1)), 403);
    assert.equal(await put(ok.url, Buffer.alloc(1023, 1)), 403);
    assert.equal(await uploads.present('team-a', hash), false);
  });

  it('binds the content-length when the size is presigned', async () => {
    const body = Buffer.from('exactly this long');
    const signed = await store.presignPut('sized/object', 60, body.length);
    assert.deepEqual(signed.headers, { 'content-length': String(body.length) });
    assert.equal(await put(signed.url, Buffer.concat([body, Buffer.from('+more')])), 403);
    assert.equal(await store.exists('sized/object'), false);
    assert.equal(await put(signed.url, body), 200);
    assert.equal((await readAll(await store.get('sized/object'))).toString(), 'exactly this long');
  });
});
