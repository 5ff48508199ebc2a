// The verification helpers nodes use on what they read from cluster storage: signed metadata documents (any
// change, another key, another purpose or no mac is refused; member order does not matter) and artifact
// downloads that exist on disk only once their bytes match the expected sha256 and size.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  artifactKey,
  artifactKeyOf,
  bindArtifactKey,
  canonicalJson,
  DocumentUntrusted,
  downloadVerified,
  HashMismatch,
  LocalBlobStore,
  putArtifact,
  signDocument,
  SizeMismatch,
  verifyDocument,
} from '../src/index.js';
import { silentLogger } from './fixtures/streams.js';

const KEY = 'storage-test-artifact-key-0123456789abcdef';

describe('signed documents', () => {
  const doc = { version: 1, id: 'snap-1', upper: { sha256: 'a'.repeat(64), size: 3 }, env: { B: '2', A: '1' } };

  it('round-trips, independent of member order and whitespace', () => {
    const text = signDocument(KEY, 'snapshot-manifest', doc);
    const reordered = JSON.parse(text) as Record<string, unknown>;
    const shuffled = Object.fromEntries(Object.entries(reordered).reverse());
    assert.deepEqual(verifyDocument(KEY, 'snapshot-manifest', shuffled, 'doc'), JSON.parse(JSON.stringify(doc)));
    assert.equal(canonicalJson({ b: [2, { d: 1, c: 0 }], a: 'x' }), '{"a":"x","b":[2,{"c":0,"d":1}]}');
  });

  it('refuses unsigned, altered, forged and other-purpose documents', () => {
    const signed = JSON.parse(signDocument(KEY, 'snapshot-manifest', doc)) as Record<string, unknown>;
    const refused = (reason: string) => (err: unknown) => err instanceof DocumentUntrusted && err.reason === reason;
    const { mac: _, ...unsigned } = signed;
    assert.throws(() => verifyDocument(KEY, 'snapshot-manifest', unsigned, 'doc'), refused('unsigned'));
    assert.throws(() => verifyDocument(KEY, 'snapshot-manifest', [signed], 'doc'), refused('unsigned'));
    assert.throws(() => verifyDocument(KEY, 'snapshot-manifest', { ...signed, id: 'snap-2' }, 'doc'), refused('forged'));
    assert.throws(() => verifyDocument(KEY, 'snapshot-manifest', { ...signed, extra: true }, 'doc'), refused('forged'));
    assert.throws(() => verifyDocument(KEY, 'snapshot-manifest', { ...signed, mac: 'hmac-sha256:zz' }, 'doc'), refused('forged'));
    assert.throws(() => verifyDocument(`${KEY}x`, 'snapshot-manifest', signed, 'doc'), refused('forged'));
    assert.throws(() => verifyDocument(KEY, 'build-manifest', signed, 'doc'), refused('forged'));
    assert.throws(() => signDocument('short', 'x', doc), /too short/);
  });

  it('binds a key to a store and fails closed without one', async () => {
    const root = await mkdtemp(join(tmpdir(), 'cove-bind-'));
    const store = new LocalBlobStore({ root, logger: silentLogger });
    assert.throws(() => artifactKeyOf(store), /no artifact key/);
    assert.throws(() => bindArtifactKey(store, 'short'));
    bindArtifactKey(store, KEY);
    assert.equal(artifactKeyOf(store), KEY);
    await rm(root, { recursive: true, force: true });
  });
});

describe('verified downloads', () => {
  let root: string;
  let store: LocalBlobStore;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'cove-verified-'));
    store = new LocalBlobStore({ root: join(root, 'store'), logger: silentLogger });
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('writes the file only when its bytes match; a swapped or longer body leaves nothing', async () => {
    const good = Buffer.from('the genuine artifact');
    const put = await putArtifact(store, good);
    const dest = join(root, 'out', 'a');
    await mkdir(join(root, 'out'));
    assert.deepEqual(await downloadVerified(store, put.sha256, dest, { size: good.length }), { size: good.length });
    assert.deepEqual(await readFile(dest), good);
    // Someone replaces the bytes under the digest's key.
    await store.put(artifactKey(put.sha256), Buffer.from('swapped!'));
    await assert.rejects(downloadVerified(store, put.sha256, join(root, 'out', 'b')), HashMismatch);
    await store.put(artifactKey(put.sha256), Buffer.concat([good, Buffer.from('more')]));
    await assert.rejects(downloadVerified(store, put.sha256, join(root, 'out', 'c'), { size: good.length }), SizeMismatch);
    assert.deepEqual((await readdir(join(root, 'out'))).sort(), ['a'], 'no partial or unverified file left');
    assert.equal(createHash('sha256').update(good).digest('hex'), put.sha256);
  });
});
