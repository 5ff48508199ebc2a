import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LocalBlobStore, S3BlobStore, createBlobStore, parseStorageUrl } from '../src/index.js';
import { silentLogger } from './fixtures/streams.js';

function issues(input: string): string[] {
  try {
    parseStorageUrl(input);
  } catch (err) {
    assert.equal((err as { code?: string }).code, 'invalid_config');
    return [...(err as { issues: string[] }).issues];
  }
  assert.fail(`${input} was accepted`);
}

describe('parseStorageUrl', () => {
  it('parses a local directory', () => {
    assert.deepEqual(parseStorageUrl('file:///var/lib/cove/storage'), { driver: 'local', root: '/var/lib/cove/storage' });
    assert.deepEqual(parseStorageUrl('file:///var/lib/cove/storage/'), { driver: 'local', root: '/var/lib/cove/storage' });
    assert.deepEqual(parseStorageUrl('file:///srv/with%20space'), { driver: 'local', root: '/srv/with space' });
  });

  it('parses an S3 location with endpoint, region, path style and explicit credentials', () => {
    const credentials = { accessKeyId: 'AK', secretAccessKey: 'SK' };
    assert.deepEqual(
      parseStorageUrl('s3://cove-cluster/prefix/a?endpoint=http://127.0.0.1:9000&region=eu-west-1&pathStyle=true', {
        credentials,
      }),
      {
        driver: 's3',
        bucket: 'cove-cluster',
        prefix: 'prefix/a/',
        endpoint: 'http://127.0.0.1:9000',
        region: 'eu-west-1',
        forcePathStyle: true,
        credentials,
      },
    );
    assert.deepEqual(parseStorageUrl('s3://bucket'), {
      driver: 's3',
      bucket: 'bucket',
      prefix: '',
      region: 'us-east-1',
      forcePathStyle: false,
    });
  });

  it('lists every problem at once', () => {
    assert.deepEqual(issues('s3://user:secret@B_ad/x?pathStyle=maybe&colour=blue&endpoint=ftp://x'), [
      'bad bucket name "B_ad"',
      'credentials must not be put in the URL',
      'unknown parameter colour',
      'endpoint must be http or https',
      'pathStyle must be true or false',
    ]);
    assert.deepEqual(issues('s3://bucket/a//b'), ['bad prefix']);
    assert.deepEqual(issues('s3://bucket/a%00b'), ['bad prefix']);
    assert.deepEqual(issues('gs://bucket'), ['unsupported scheme gs:']);
    assert.deepEqual(issues('not a url'), ['not a URL: "not a url"']);
    assert.deepEqual(issues('file://host/dir'), ['file URL must not name a host']);
    assert.deepEqual(issues('file:///'), ['file URL needs a directory']);
    assert.deepEqual(issues('file:///x?y=1'), ['file URL takes no query or fragment']);
  });

  it('builds the matching driver', () => {
    const local = createBlobStore(parseStorageUrl('file:///tmp/cove-never-written'), { logger: silentLogger });
    assert.ok(local instanceof LocalBlobStore);
    const s3 = createBlobStore(parseStorageUrl('s3://bucket/p?endpoint=http://127.0.0.1:1&pathStyle=true'), {
      logger: silentLogger,
    });
    assert.ok(s3 instanceof S3BlobStore);
    (s3 as S3BlobStore).close();
  });
});
