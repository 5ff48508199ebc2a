// The node layer cache over a real local blob store: extraction as root with owners, whiteouts and opaque
// xattrs intact, one extraction for concurrent callers, corrupt and missing layers refused without leftovers,
// adopt without a download, LRU eviction that never takes a leased or in-use layer, reload after a restart.
// Then manifests and the resolver on top of it.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Readable } from 'node:stream';
import { artifactKey, bindArtifactKey, LocalBlobStore, putArtifact, signDocument, type BlobStore } from '@cove/storage';
import { createLogger } from '../src/logger.js';
import { LAYER_TAR_FLAGS } from '../src/sandbox/layer-export.js';
import { LayerCache } from '../src/templates/layer-cache.js';
import { ManifestExists, ManifestInvalid, readManifest, writeManifest, type BuildManifestInput } from '../src/templates/manifest.js';
import { TemplateResolver } from '../src/templates/resolver.js';
import { waitFor } from './orchestrator-fixture.js';

const KEY = 'layer-cache-test-artifact-key-0123456789abcdef';

const pexec = promisify(execFile);
const ROOT = '/var/tmp/cove-orch-test/templates-cache';
const log = createLogger('error');

/** A layer tar made the way exportUpper makes one, from a tree with a whiteout and an opaque dir. */
async function makeLayer(name: string, files: Record<string, string>, extra = ''): Promise<{ file: string; digest: string; size: number }> {
  const src = join(ROOT, 'src', name);
  await rm(src, { recursive: true, force: true });
  await mkdir(src, { recursive: true });
  for (const [p, content] of Object.entries(files)) {
    await mkdir(join(src, p, '..'), { recursive: true });
    await writeFile(join(src, p), content);
  }
  if (extra) await pexec('bash', ['-c', `cd ${src} && ${extra}`]);
  const file = join(ROOT, 'src', `${name}.tar`);
  await pexec('tar', ['-c', '-f', file, '-C', src, ...LAYER_TAR_FLAGS, ...(await readdir(src))]);
  const bytes = await readFile(file);
  return { file, digest: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
}

/** The real store, counting reads (to see which calls downloaded). */
function counting(store: BlobStore): { store: BlobStore; gets: () => number } {
  let n = 0;
  const wrapped = Object.create(store) as BlobStore;
  wrapped.get = (key, o) => {
    n++;
    return store.get(key, o);
  };
  return { store: wrapped, gets: () => n };
}

async function cacheNames(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

describe('layer cache', () => {
  let store: LocalBlobStore;

  before(async () => {
    await rm(ROOT, { recursive: true, force: true });
    await mkdir(ROOT, { recursive: true });
    store = new LocalBlobStore({ root: join(ROOT, 'storage'), logger: log });
  });
  after(async () => {
    await rm(ROOT, { recursive: true, force: true });
  });

  it('extracts a layer once, as stored, and serves it without downloading again', async () => {
    const layer = await makeLayer('a', { 'opt/a.txt': 'a', 'srv/d/x': 'x' }, [
      'chown -R 101000:101000 opt', 'mknod opt/gone c 0 0',
      `python3 -c "import os; os.setxattr('srv/d', 'trusted.overlay.opaque', b'y')"`,
    ].join(' && '));
    await putArtifact(store, await readFile(layer.file));
    const c = counting(store);
    const cache = new LayerCache({ dir: join(ROOT, 'c1'), store: c.store, maxBytes: 1 << 30, log });
    const dirs = await Promise.all([cache.ensure(layer.digest), cache.ensure(layer.digest), cache.ensure(layer.digest)]);
    assert.equal(new Set(dirs).size, 1);
    assert.equal(c.gets(), 1, 'concurrent ensures share one download');
    const dir = dirs[0]!;
    assert.equal(dir, join(ROOT, 'c1', layer.digest.slice(0, 16)));
    assert.equal(await readFile(join(dir, 'opt/a.txt'), 'utf8'), 'a');
    const st = await lstat(join(dir, 'opt/a.txt'));
    assert.deepEqual([st.uid, st.gid], [101000, 101000]);
    const wh = await lstat(join(dir, 'opt/gone'));
    assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'whiteout kept');
    const { stdout } = await pexec('python3', ['-c', `import os; print(os.getxattr('${join(dir, 'srv/d')}', 'trusted.overlay.opaque'))`]);
    assert.equal(stdout.trim(), "b'y'");
    assert.equal(await cache.ensure(layer.digest), dir);
    assert.equal(c.gets(), 1, 'a present layer is not fetched again');
    assert.deepEqual(cache.stats(), { layers: 1, bytes: layer.size, maxBytes: 1 << 30, pinned: 0 });
  });

  it('refuses missing and corrupt layers and leaves nothing behind', async () => {
    const dir = join(ROOT, 'c2');
    const cache = new LayerCache({ dir, store, maxBytes: 1 << 30, log });
    const absent = createHash('sha256').update('absent').digest('hex');
    await assert.rejects(cache.ensure(absent), { code: 'layer_missing' });
    // Bytes that do not hash to their key (storage tampered with or damaged).
    const good = await makeLayer('b', { 'b.txt': 'b' });
    const other = await makeLayer('b2', { 'b.txt': 'tampered' });
    await store.put(artifactKey(good.digest), await readFile(other.file));
    await assert.rejects(cache.ensure(good.digest), { code: 'layer_corrupt', message: /hashes to/ });
    // Content that matches its digest but is no tar.
    const junk = await putArtifact(store, Buffer.from('this is not a tar archive at all'.repeat(40)));
    await assert.rejects(cache.ensure(junk.sha256), { code: 'layer_corrupt' });
    await assert.rejects(cache.ensure('../../etc'), { code: 'layer_corrupt' });
    assert.deepEqual(await cacheNames(dir), []);
    assert.equal(cache.has(good.digest), false);
  });

  it('adopts a local tar without downloading, checking its digest', async () => {
    const c = counting(store);
    const cache = new LayerCache({ dir: join(ROOT, 'c3'), store: c.store, maxBytes: 1 << 30, log });
    const layer = await makeLayer('c', { 'c.txt': 'c' });
    const wrong = createHash('sha256').update('wrong').digest('hex');
    await assert.rejects(cache.adopt(wrong, layer.file), { code: 'layer_corrupt' });
    const dir = await cache.adopt(layer.digest, layer.file);
    assert.equal(await readFile(join(dir, 'c.txt'), 'utf8'), 'c');
    assert.equal(await cache.ensure(layer.digest), dir);
    assert.equal(c.gets(), 0);
    assert.deepEqual(await cacheNames(join(ROOT, 'c3')), [layer.digest.slice(0, 16), `${layer.digest.slice(0, 16)}.json`]);
  });

  it('evicts least recently used layers beyond its size, never leased or in-use ones, and reloads after a restart', async () => {
    const layers = await Promise.all(['e1', 'e2', 'e3', 'e4', 'e5'].map((n) => makeLayer(n, { [`${n}.bin`]: n.repeat(20_000) })));
    for (const l of layers) await putArtifact(store, await readFile(l.file));
    const [l1, l2, l3, l4, l5] = layers as [typeof layers[0], typeof layers[0], typeof layers[0], typeof layers[0], typeof layers[0]];
    const dir = join(ROOT, 'c4');
    const inUse = new Set<string>();
    // Room for two layers and a bit.
    const cache = new LayerCache({ dir, store, maxBytes: l1.size * 2 + 100, log, inUse: async () => inUse });
    const lease = cache.acquire([l1.digest]);
    await cache.ensure(l1.digest);
    await cache.ensure(l2.digest);
    await cache.ensure(l3.digest);
    await cache.settle();
    // l1 is leased: l2, the least recently used free one, went.
    assert.deepEqual([l1, l2, l3].map((l) => cache.has(l.digest)), [true, false, true]);
    inUse.add(cache.dirOf(l3.digest));
    // As every caller does: the lease before ensure(), so the fetch's own eviction cannot take what it fetched.
    const lease4 = cache.acquire([l4.digest]);
    await cache.ensure(l4.digest);
    await cache.settle();
    assert.deepEqual([l1, l3, l4].map((l) => cache.has(l.digest)), [true, true, true], 'over size, but the rest is leased or in use');
    lease4.release();
    lease.release();
    lease.release();
    await cache.settle();
    assert.equal(cache.has(l1.digest), false, 'released: evicted');
    inUse.clear();
    await cache.ensure(l4.digest); // most recently used now
    await cache.ensure(l5.digest);
    await cache.settle();
    assert.deepEqual([l3, l4, l5].map((l) => cache.has(l.digest)), [false, true, true]);
    assert.deepEqual(await cacheNames(dir), [l4, l5].flatMap((l) => [l.digest.slice(0, 16), `${l.digest.slice(0, 16)}.json`]).sort());

    // A crashed run's leftovers: an extraction in progress, a dir whose record was never written.
    await mkdir(join(dir, '.tmp-0123456789abcdef-00000000'));
    await mkdir(join(dir, 'fedcba9876543210'));
    const c = counting(store);
    const again = new LayerCache({ dir, store: c.store, maxBytes: 1 << 30, log });
    await again.init();
    assert.ok(again.has(l4.digest) && again.has(l5.digest));
    assert.equal(await again.ensure(l5.digest), cache.dirOf(l5.digest));
    assert.equal(c.gets(), 0);
    assert.deepEqual(await cacheNames(dir), [l4, l5].flatMap((l) => [l.digest.slice(0, 16), `${l.digest.slice(0, 16)}.json`]).sort());
  });

  it('never hands unverified bytes to tar: a swapped layer is refused before anything of it is unpacked', async () => {
    const good = await makeLayer('v-good', { 'g.txt': 'g' });
    const evil = await readFile((await makeLayer('v-evil', { 'pwned.txt': 'evil' })).file);
    const dir = join(ROOT, 'cv');
    // Storage answers the good digest with another tar and then holds the body open: every byte is on the node,
    // but the end (and so the digest check) has not come yet.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let delivered = false;
    const swapped = Object.create(store) as BlobStore;
    swapped.get = async () =>
      Readable.from(
        (async function* () {
          yield evil;
          delivered = true;
          await gate;
        })(),
      );
    const cache = new LayerCache({ dir, store: swapped, maxBytes: 1 << 30, log });
    const result = cache.ensure(good.digest).then(() => null, (err: unknown) => err);
    const spooled = async (): Promise<number> => {
      let n = 0;
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const st = await lstat(join(dir, name));
        if (st.isFile() && name.startsWith('.tmp-')) n += st.size;
      }
      return n;
    };
    const extracted = async (): Promise<boolean> =>
      ((await readdir(dir, { recursive: true }).catch(() => [])) as string[]).some((p) => p.endsWith('pwned.txt'));
    assert.ok(await waitFor(async () => delivered && ((await spooled()) === evil.length || (await extracted())), 10_000), 'the body arrived');
    assert.equal(await extracted(), false, 'nothing was unpacked from bytes not yet verified');
    release();
    assert.equal(((await result) as { code?: string } | null)?.code, 'layer_corrupt');
    assert.equal(await extracted(), false);
    assert.deepEqual((await cacheNames(dir)).filter((n) => n.startsWith('.tmp-')), [], 'no leftovers');
  });
});

describe('build manifests and the resolver', () => {
  let store: LocalBlobStore;
  const ROOT2 = `${ROOT}-resolver`;
  const manifest = (over: Partial<BuildManifestInput> = {}): BuildManifestInput => ({
    version: 1,
    templateId: 'tmpl1',
    buildId: 'b0000000-0000-4000-8000-000000000001',
    base: { kind: 'builtin', id: 'base' },
    layers: [],
    env: { FOO: 'bar' },
    workdir: '/home/user',
    user: 'user',
    startCmd: null,
    readyCmd: null,
    vcpu: 1,
    memoryMb: 256,
    diskMb: 512,
    envdVersion: '0.1.0',
    createdAt: new Date().toISOString(),
    ...over,
  });

  before(async () => {
    await rm(ROOT2, { recursive: true, force: true });
    await mkdir(join(ROOT2, 'src'), { recursive: true });
    store = new LocalBlobStore({ root: join(ROOT2, 'storage'), logger: log });
    bindArtifactKey(store, KEY);
  });
  after(async () => {
    await rm(ROOT2, { recursive: true, force: true });
  });

  it('writes a manifest once and reads it back', async () => {
    const m = manifest({ buildId: 'build-rw' });
    delete (m as Record<string, unknown>).startCmd;
    const written = await writeManifest(store, m);
    assert.equal(written.startCmd, null);
    assert.deepEqual(await readManifest(store, 'build-rw'), written);
    await assert.rejects(writeManifest(store, m), ManifestExists);
    assert.equal(await readManifest(store, 'build-none'), null);
    await assert.rejects(writeManifest(store, manifest({ buildId: 'build-bad', workdir: 'relative', layers: [{ digest: 'x', size: 1 }] })), (err: unknown) => {
      assert.ok(err instanceof ManifestInvalid);
      assert.match(err.message, /workdir/);
      assert.match(err.message, /layers\.0\.digest/);
      return true;
    });
    await assert.rejects(writeManifest(store, manifest({ buildId: '../escape' })), ManifestInvalid);
    await store.put('templates/builds/build-junk/manifest.json', Buffer.from('{"version":1'));
    await assert.rejects(readManifest(store, 'build-junk'), ManifestInvalid);
  });

  it('refuses build manifests not signed with the cluster key: unsigned, forged, altered, another purpose', async () => {
    const m = await writeManifest(store, manifest({ buildId: 'build-auth' }));
    const key = 'templates/builds/build-auth/manifest.json';
    const text = async (k: string): Promise<string> => {
      const chunks: Buffer[] = [];
      for await (const c of await store.get(k)) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    };
    const signed = JSON.parse(await text(key)) as Record<string, unknown>;
    assert.match(String(signed['mac']), /^hmac-sha256:[0-9a-f]{64}$/);
    const untrusted = (build: string) => (err: unknown) => err instanceof ManifestInvalid && err.buildId === build && /not authenticated/.test(err.message);
    const { mac: _, ...unsigned } = signed;
    const cases: Array<[string, string]> = [
      // Written before manifests were signed (or by anyone without the key).
      ['build-unsigned', JSON.stringify({ ...unsigned, buildId: 'build-unsigned' })],
      // Signed, but with another key.
      ['build-forged', signDocument('another-cluster-key-0123456789abcdefghij', 'build-manifest', { ...unsigned, buildId: 'build-forged' })],
      // Signed with the right key, then one layer swapped for another team's.
      ['build-auth', JSON.stringify({ ...signed, layers: [{ digest: 'a'.repeat(64), size: 1 }] })],
      // The right key, for a snapshot manifest: not a build manifest.
      ['build-purpose', signDocument(KEY, 'snapshot-manifest', { ...unsigned, buildId: 'build-purpose' })],
    ];
    for (const [build, body] of cases) {
      await store.put(`templates/builds/${build}/manifest.json`, Buffer.from(body));
      await assert.rejects(readManifest(store, build), untrusted(build), build);
    }
    const cache = new LayerCache({ dir: join(ROOT2, 'l-auth'), store, maxBytes: 1 << 30, log });
    const resolver = new TemplateResolver({ store, cache, builtinRootfs: async () => '/rootfs', log });
    await assert.rejects(resolver.resolve('tmpl1', 'build-forged'), { code: 'template_not_found' });
    assert.equal(m.buildId, 'build-auth');
  });

  it('resolves a build to its layers, top first over the built-in rootfs, or NOT_FOUND', async () => {
    const tarOf = async (name: string, content: string) => {
      const dir = join(ROOT2, 'src', name);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, `${name}.txt`), content);
      const file = join(ROOT2, 'src', `${name}.tar`);
      await pexec('tar', ['-c', '-f', file, '-C', dir, ...LAYER_TAR_FLAGS, `${name}.txt`]);
      const put = await putArtifact(store, await readFile(file));
      return { digest: put.sha256, size: put.size };
    };
    const bottom = await tarOf('bottom', 'b');
    const top = await tarOf('top', 't');
    const cache = new LayerCache({ dir: join(ROOT2, 'l'), store, maxBytes: 1 << 30, log });
    const resolver = new TemplateResolver({ store, cache, builtinRootfs: async (id) => (id === 'base' ? '/rootfs/of/base' : null), log });
    await writeManifest(store, manifest({ buildId: 'build-ok', layers: [bottom, top] }));
    const r = await resolver.resolve('tmpl1', 'build-ok');
    assert.deepEqual(r.layers, [cache.dirOf(top.digest), cache.dirOf(bottom.digest), '/rootfs/of/base']);
    assert.equal(r.manifest.env.FOO, 'bar');
    assert.equal(cache.stats().pinned, 2);
    r.release();
    assert.equal(cache.stats().pinned, 0);

    const notFound = { code: 'template_not_found' };
    await assert.rejects(resolver.resolve('tmpl1', 'build-missing'), notFound);
    await assert.rejects(resolver.resolve('other-template', 'build-ok'), notFound);
    await assert.rejects(resolver.resolve('tmpl1', 'bad/id'), notFound);
    await writeManifest(store, manifest({ buildId: 'build-nobase', base: { kind: 'builtin', id: 'python' }, layers: [top] }));
    await assert.rejects(resolver.resolve('tmpl1', 'build-nobase'), { code: 'template_not_found', message: /base template python/ });
    const lost = { digest: createHash('sha256').update('lost').digest('hex'), size: 4 };
    await writeManifest(store, manifest({ buildId: 'build-lost', layers: [bottom, lost] }));
    await assert.rejects(resolver.resolve('tmpl1', 'build-lost'), { code: 'template_not_found', message: /not in cluster storage/ });
    assert.equal(cache.stats().pinned, 0, 'a failed resolve releases its lease');
    await writeManifest(store, manifest({ buildId: 'build-image', base: null, layers: [top] }));
    assert.deepEqual((await resolver.resolve('tmpl1', 'build-image')).layers, [cache.dirOf(top.digest)]);
  });
});
