import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { S3BlobStore, putArtifact } from '../src/index.js';
import { describeBlobStore } from './fixtures/blob-store-suite.js';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '@cove/test-support/s3-server';
import { filesIn, patternBytes, patternStream, readAll, silentLogger } from './fixtures/streams.js';

let server: S3Server;
before(async () => {
  server = await startS3Server();
});
after(async () => {
  await server.stop();
});

async function openStore(prefix: string, extra: Partial<ConstructorParameters<typeof S3BlobStore>[0]> = {}) {
  const spoolDir = await mkdtemp(join(tmpdir(), 'cove-s3-spool-'));
  const store = new S3BlobStore({
    bucket: server.bucket,
    prefix,
    endpoint: server.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
    spoolDir,
    logger: silentLogger,
    ...extra,
  });
  return {
    store,
    leftovers: () => filesIn(spoolDir),
    close: async () => {
      store.close();
      await rm(spoolDir, { recursive: true, force: true });
    },
  };
}

describeBlobStore('S3 protocol (s3rver)', () => openStore('suite/'));

describe('S3BlobStore specifics', () => {
  it('uploads large bodies as multipart and records the sha256 as metadata', async () => {
    const fx = await openStore('mp/', { multipartThreshold: 256 * 1024, partSize: 100 * 1024 });
    try {
      const data = await patternBytes(700_000, 5);
      const put = await fx.store.put('big.bin', patternStream(700_000, 5));
      assert.equal(put.sha256, createHash('sha256').update(data).digest('hex'));
      assert.deepEqual(await readAll(await fx.store.get('big.bin')), data);
      const head = await fx.store.head('big.bin');
      assert.equal(head?.size, data.length);
      assert.equal(head?.sha256, put.sha256);
      assert.deepEqual(await fx.leftovers(), []);
    } finally {
      await fx.close();
    }
  });

  it('copies large objects in parts, keeping the recorded sha256', async () => {
    const fx = await openStore('mpc/', { copyThreshold: 200 * 1024, partSize: 150 * 1024 });
    try {
      const data = await patternBytes(500_000, 8);
      const put = await fx.store.put('src.bin', data);
      await fx.store.copy('src.bin', 'dst/copy.bin');
      assert.deepEqual(await readAll(await fx.store.get('dst/copy.bin')), data);
      assert.equal((await fx.store.head('dst/copy.bin'))?.sha256, put.sha256);
      await assert.rejects(fx.store.copy('absent.bin', 'dst/never'), { code: 'not_found' });
    } finally {
      await fx.close();
    }
  });

  it('keeps prefixes apart and pages through long listings', async () => {
    const a = await openStore('tenant-a/');
    const b = await openStore('tenant-b');
    try {
      await a.store.put('same/key', Buffer.from('a'));
      await b.store.put('same/key', Buffer.from('b'));
      assert.equal((await readAll(await a.store.get('same/key'))).toString(), 'a');
      assert.equal((await readAll(await b.store.get('same/key'))).toString(), 'b');
      // s3rver pages ListObjectsV2 at 1000 keys, like S3.
      for (let i = 0; i < 1005; i += 25) {
        await Promise.all(
          Array.from({ length: Math.min(25, 1005 - i) }, (_, j) =>
            a.store.put(`many/${String(i + j).padStart(4, '0')}`, Buffer.from('x')),
          ),
        );
      }
      let n = 0;
      let last = '';
      for await (const info of a.store.list('many/')) {
        assert.ok(info.key > last);
        last = info.key;
        n++;
      }
      assert.equal(n, 1005);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('reports the stored hash of artifacts through head', async () => {
    const fx = await openStore('art/');
    try {
      const put = await putArtifact(fx.store, Buffer.from('metadata travels'));
      assert.equal((await fx.store.head(put.key))?.sha256, put.sha256);
    } finally {
      await fx.close();
    }
  });
});
