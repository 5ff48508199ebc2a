// Against a real CNCF distribution registry (Debian's docker-registry), started here with htpasswd auth.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { getAttributeSync } from 'fs-xattr';
import { freePort } from '@cove/test-support/free-port';
import {
  DigestMismatch,
  ImageNotFound,
  importLayer,
  MediaTypes,
  parseImageRef,
  pushImage,
  RegistryAuthError,
  RegistryClient,
  startRegistry,
  type PushedImage,
  type RunningRegistry,
} from '../src/index.js';
import { makeTar } from './tar-fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'cove-oci-registry-'));
const username = 'cove';
const password = randomBytes(32).toString('hex');
let registry: RunningRegistry;
let client: RegistryClient;
let pushed: PushedImage;
let layerTar: Buffer;

before(async () => {
  registry = await startRegistry({
    host: '127.0.0.1',
    port: await freePort(),
    storageDir: join(dir, 'storage'),
    configDir: join(dir, 'config'),
    username,
    password,
    httpSecret: randomBytes(16).toString('hex'),
  });
  client = new RegistryClient({ url: registry.url, username, password });
  layerTar = await makeTar(
    [
      { name: './', type: 'directory' },
      { name: './etc/', type: 'directory' },
      { name: './etc/.wh.issue', content: '' },
      { name: './opt/app/', type: 'directory', uid: 1000, gid: 1000, mode: 0o700 },
      { name: './opt/app/.wh..wh..opq', content: '' },
      { name: './opt/app/run.sh', content: '#!/bin/sh\necho hi\n', uid: 1000, gid: 1000, mode: 0o755 },
      { name: './usr/bin/su', content: 'su', mode: 0o4755 },
    ],
    true,
  );
  pushed = await pushImage(client, {
    repository: 'library/tiny',
    tags: ['1.0', 'latest'],
    layers: [{ data: layerTar }],
    config: { env: ['PATH=/usr/bin:/bin', 'GREETING=a=b'], cmd: ['/opt/app/run.sh'], entrypoint: ['/bin/sh', '-c'], workingDir: '/opt/app', user: 'app' },
  });
});

after(async () => {
  await registry?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('no port without authentication: /v2/ answers 401 to anonymous clients', async () => {
  await assert.rejects(new RegistryClient({ url: registry.url }).ping(), (e: unknown) => e instanceof RegistryAuthError && /requires credentials/.test((e as Error).message));
  await client.ping();
});

test('push then pull through parseImageRef: manifest, config and a verified layer that imports right', async () => {
  const img = await client.getImage(parseImageRef('tiny:1.0'));
  assert.equal(img.digest, pushed.manifestDigest);
  assert.equal(img.mediaType, MediaTypes.ociManifest);
  assert.deepEqual(img.imageConfig, {
    env: { PATH: '/usr/bin:/bin', GREETING: 'a=b' },
    workdir: '/opt/app',
    user: 'app',
    cmd: ['/opt/app/run.sh'],
    entrypoint: ['/bin/sh', '-c'],
  });
  assert.equal(img.layers.length, 1);
  assert.equal(img.layers[0].mediaType, MediaTypes.ociLayerGzip);
  assert.equal((await client.getImage('tiny')).digest, pushed.manifestDigest, 'latest');
  assert.equal((await client.getImage(`docker.io/library/tiny@${pushed.manifestDigest}`)).digest, pushed.manifestDigest);

  const dest = join(dir, 'imported');
  await importLayer(await client.openBlob(img.repository, img.layers[0]), dest, { idOffset: 100000 });
  assert.ok(lstatSync(join(dest, 'etc/issue')).isCharacterDevice());
  assert.equal(getAttributeSync(join(dest, 'opt/app'), 'trusted.overlay.opaque').toString(), 'y');
  const app = lstatSync(join(dest, 'opt/app'));
  assert.deepEqual([app.uid, app.gid, app.mode & 0o7777], [101000, 101000, 0o700]);
  assert.equal(readFileSync(join(dest, 'opt/app/run.sh'), 'utf8'), '#!/bin/sh\necho hi\n');
  const su = lstatSync(join(dest, 'usr/bin/su'));
  assert.deepEqual([su.uid, su.mode & 0o7777], [100000, 0o4755]);
});

test('image indexes resolve to the linux/amd64 manifest; Docker schema 2 media types work', async () => {
  const arm = await pushImage(client, { repository: 'library/tiny', tags: ['arm'], layers: [{ data: layerTar }], architecture: 'arm64' });
  const index = (arch: Array<[string, string]>) => ({
    schemaVersion: 2,
    mediaType: MediaTypes.ociIndex,
    manifests: arch.map(([digest, architecture]) => ({ mediaType: MediaTypes.ociManifest, digest, size: 0, platform: { os: 'linux', architecture } })),
  });
  const sizeOf = async (d: string) => Buffer.byteLength(JSON.stringify(d === arm.manifestDigest ? arm.manifest : pushed.manifest));
  const multi = index([
    [arm.manifestDigest, 'arm64'],
    [pushed.manifestDigest, 'amd64'],
  ]);
  for (const m of multi.manifests) m.size = await sizeOf(m.digest);
  await client.pushManifest('library/tiny', 'multi', multi, MediaTypes.ociIndex);
  const viaIndex = await client.getImage('tiny:multi');
  assert.equal(viaIndex.digest, pushed.manifestDigest);
  assert.equal(viaIndex.rawConfig.architecture, 'amd64');

  const armOnly = index([[arm.manifestDigest, 'arm64']]);
  armOnly.manifests[0].size = await sizeOf(arm.manifestDigest);
  await client.pushManifest('library/tiny', 'armonly', armOnly, MediaTypes.ociIndex);
  await assert.rejects(client.getImage('tiny:armonly'), (e: unknown) => e instanceof ImageNotFound && /linux\/amd64/.test((e as Error).message));

  const docker = {
    schemaVersion: 2,
    mediaType: MediaTypes.dockerManifest,
    config: { ...pushed.config, mediaType: MediaTypes.dockerConfig },
    layers: pushed.layers.map((l) => ({ ...l, mediaType: MediaTypes.dockerLayerGzip })),
  };
  await client.pushManifest('library/tiny', 'docker', docker, MediaTypes.dockerManifest);
  const d = await client.getImage('tiny:docker');
  assert.equal(d.mediaType, MediaTypes.dockerManifest);
  assert.equal(d.imageConfig.workdir, '/opt/app');
});

test('unknown tags and repositories are "image not found"', async () => {
  await assert.rejects(client.getImage('tiny:nope'), (e: unknown) => e instanceof ImageNotFound && /image not found: library\/tiny:nope/.test((e as Error).message));
  await assert.rejects(client.getImage('no-such-image'), ImageNotFound);
  assert.equal(await client.hasManifest('library/tiny', '1.0'), true);
  assert.equal(await client.hasManifest('library/tiny', 'nope'), false);
});

test('a wrong password is an authentication error', async () => {
  const bad = new RegistryClient({ url: registry.url, username, password: 'wrong' });
  await assert.rejects(bad.getImage('tiny:1.0'), RegistryAuthError);
  await assert.rejects(bad.pushBlob('library/tiny', Buffer.from('x')), RegistryAuthError);
});

test('pushing a blob twice uploads it once; pushed content reads back', async () => {
  const blob = randomBytes(100_000);
  const a = await client.pushBlob('library/blobs', blob);
  const b = await client.pushBlob('library/blobs', blob);
  assert.deepEqual(a, b);
  const file = join(dir, 'blob.bin');
  writeFileSync(file, blob);
  assert.deepEqual(await client.pushBlob('library/blobs2', { path: file }), a);
  const chunks: Buffer[] = [];
  for await (const c of await client.openBlob('library/blobs2', a)) chunks.push(c as Buffer);
  assert.ok(Buffer.concat(chunks).equals(blob));
});

test('a blob corrupted in the registry fails with a digest error', async () => {
  const blob = randomBytes(50_000);
  const { digest, size } = await client.pushBlob('library/corrupt', blob);
  const hex = digest.slice('sha256:'.length);
  const data = join(dir, 'storage/docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
  const bytes = readFileSync(data);
  bytes[1234] ^= 0xff;
  writeFileSync(data, bytes);
  const stream = await client.openBlob('library/corrupt', { digest, size });
  await assert.rejects(
    (async () => {
      for await (const _ of stream) {
        /* read all */
      }
    })(),
    DigestMismatch,
  );
  // A plain-tar layer whose file content was altered still parses as a tar: only the digest catches it, and the
  // import fails instead of returning a quietly wrong directory.
  const plain = await makeTar([{ name: 'file', content: 'z'.repeat(4096) }]);
  const layer = await client.pushBlob('library/corrupt', plain);
  const lhex = layer.digest.slice('sha256:'.length);
  const ldata = join(dir, 'storage/docker/registry/v2/blobs/sha256', lhex.slice(0, 2), lhex, 'data');
  const lbytes = readFileSync(ldata);
  lbytes[600] = 'y'.charCodeAt(0);
  writeFileSync(ldata, lbytes);
  await assert.rejects(importLayer(await client.openBlob('library/corrupt', layer), join(dir, 'corrupt-import'), { idOffset: 100000 }), DigestMismatch);

  // Corrupt config of a pushed image: getImage refuses it too.
  const img = await pushImage(client, { repository: 'library/badcfg', tags: ['1'], layers: [{ data: layerTar }], config: { env: ['X=1'] } });
  const chex = img.config.digest.slice('sha256:'.length);
  const cfile = join(dir, 'storage/docker/registry/v2/blobs/sha256', chex.slice(0, 2), chex, 'data');
  writeFileSync(cfile, readFileSync(cfile, 'utf8').replace('X=1', 'X=2'));
  await assert.rejects(client.getImage('badcfg:1'), DigestMismatch);
});
