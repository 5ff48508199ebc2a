// Template builds end to end on the real runtime (instance covtb1), a local storage dir and the node layer
// cache: a multi-step build from `base`, its layers booted into a sandbox, cached and forced rebuilds,
// failures with the right step, refused COPY sources, BuildStatus paging.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { BuildRequestSchema, type BuildRequest } from '@cove/contracts/orchestrator';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { bindArtifactKey, LocalBlobStore, buildFileKey } from '@cove/storage';
import { pack as tarPack } from 'tar-stream';
import { gzipSync } from 'node:zlib';
import { BuildManager, type BuildStatusView } from '../src/build/build-manager.js';
import { sdkFilesHash } from '../src/build/copy-source.js';
import { createLogger } from '../src/logger.js';
import { LayerCache } from '../src/templates/layer-cache.js';
import { readManifest } from '../src/templates/manifest.js';
import { instance, makeRuntime, teardown, waitFor } from './orchestrator-fixture.js';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { pushImage, RegistryClient, startRegistry, type RunningRegistry } from '@cove/oci';
import { freePort } from '@cove/test-support/free-port';
import { RegistryImageBase } from '../src/build/image-base.js';

const I = instance('covtb1', 'tb1-', '10.224.0.0/16');
const TEAM = 'team1';

type TarEntry = { name: string; mode?: number; data?: string; type?: 'file' | 'directory' | 'symlink' | 'link'; linkname?: string };

async function makeTar(entries: TarEntry[], gzip = true): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const ended = new Promise<void>((r) => p.on('end', () => r()));
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = { name: e.name, mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644), type, linkname: e.linkname };
    if (type === 'file') p.entry(header, e.data ?? '');
    else p.entry(header);
  }
  p.finalize();
  await ended;
  const tar = Buffer.concat(chunks);
  return gzip ? gzipSync(tar) : tar;
}

describe('template builds', { timeout: 600_000 }, () => {
  const runtime = makeRuntime(I);
  let storeDir: string;
  let store: LocalBlobStore;
  let layers: LayerCache;
  let manager: BuildManager;
  let boots = 0;
  let registry: RunningRegistry;
  const regUser = 'cove';
  const regPass = randomBytes(16).toString('hex');
  let seq = 0;
  const log = createLogger('error');

  // Counts boots of the real runtime: a fully cached rebuild must boot nothing.
  const counting = {
    builtinRootfs: (t: string) => runtime.builtinRootfs(t),
    boot: (o: Parameters<typeof runtime.boot>[0]) => ((boots += 1), runtime.boot(o)),
    claim: (s: string, o: Parameters<typeof runtime.claim>[1]) => runtime.claim(s, o),
    exportUpper: (s: string, f: string) => runtime.exportUpper(s, f),
    destroy: (s: string) => runtime.destroy(s),
  };

  const hashOf = (src: string, dest: string, files: { path: string; mode: number; data: string }[]) =>
    sdkFilesHash(src, dest, files.map((f) => ({ ...f, data: Buffer.from(f.data) })));

  async function upload(hash: string, tar: Buffer): Promise<void> {
    await store.put(buildFileKey(TEAM, hash), tar);
  }

  function request(over: Omit<MessageInitShape<typeof BuildRequestSchema>, '$typeName'> = {}): BuildRequest {
    seq += 1;
    return create(BuildRequestSchema, {
      templateId: 'tpl1',
      buildId: `b-${process.pid}-${seq}`,
      teamId: TEAM,
      source: { case: 'fromBuildId', value: 'base' },
      vcpu: 1,
      memoryMb: 256,
      diskMb: 512,
      ...over,
    });
  }

  async function finish(req: BuildRequest): Promise<BuildStatusView> {
    let s: BuildStatusView | undefined;
    const ok = await waitFor(async () => {
      s = await manager.status(req.templateId, req.buildId, 0, 100);
      return s.state !== 'building';
    }, 300_000, 100);
    assert.ok(ok, 'build did not finish');
    return s!;
  }

  async function allLogs(req: BuildRequest): Promise<string[]> {
    const out: string[] = [];
    for (let off = 0; ; ) {
      const page = await manager.status(req.templateId, req.buildId, off, 100);
      out.push(...page.entries.map((e) => `[${e.step}] ${e.message}`));
      off += page.entries.length;
      if (page.entries.length === 0) return out;
    }
  }

  before(async () => {
    await teardown(I);
    await runtime.prepare();
    storeDir = await mkdtemp(join(tmpdir(), 'cove-build-test-'));
    store = new LocalBlobStore({ root: join(storeDir, 'storage'), logger: log });
    bindArtifactKey(store, 'build-engine-test-artifact-key-0123456789abcdef');
    layers = new LayerCache({ dir: join(I.dataDir, 'l'), store, maxBytes: 2 * 1024 ** 3, inUse: () => runtime.layersInUse(), log });
    registry = await startRegistry({
      host: '127.0.0.1',
      port: await freePort(),
      storageDir: join(storeDir, 'registry'),
      configDir: join(storeDir, 'registry-config'),
      username: regUser,
      password: regPass,
      httpSecret: randomBytes(16).toString('hex'),
    });
    await mkdir(join(I.dataDir, 'build-tmp'), { recursive: true });
    manager = new BuildManager({
      runtime: counting,
      layers,
      store,
      images: new RegistryImageBase({ url: registry.url, username: regUser, password: regPass, store, layers, workDir: join(I.dataDir, 'build-tmp'), idOffset: 100_000, log }),
      workDir: join(I.dataDir, 'build-tmp'),
      limits: { defaults: { vcpu: 1, memoryMb: 256, diskMb: 512 }, maxVcpu: 4, maxMemoryMb: 4096, maxDiskMb: 8192 },
      concurrency: 2,
      log,
    });
  });

  after(async () => {
    await manager?.close();
    await registry?.stop();
    await teardown(I);
    await rm(storeDir, { recursive: true, force: true });
  });

  const appFiles = [
    { path: 'app/main.sh', mode: 0o755, data: '#!/bin/sh\necho main\n' },
    { path: 'app/conf.txt', mode: 0o600, data: 'conf=1\n' },
  ];
  // No directory entries: the files hash is fully determined by the tar, so it is verified exactly.
  const appHash = hashOf('app/*', 'app/', appFiles);
  const steps = (runCmd: string, force = false) => [
    { type: 'ENV', args: ['GREETING', 'hello', 'PATH2', '$GREETING-world'] },
    { type: 'USER', args: ['builder'] },
    { type: 'WORKDIR', args: ['/srv/work'] },
    { type: 'COPY', args: ['app/*', 'app/', '', '0750'], filesHash: appHash },
    { type: 'RUN', args: [runCmd], force },
    { type: 'RUN', args: ['echo root-was-here > /etc/built-by && id -un', 'root'] },
  ];

  let firstManifestLayers: string[] = [];

  it('builds RUN+COPY+ENV+WORKDIR+USER from base and the layers boot with the files, owners and modes', async () => {
    await upload(appHash, await makeTar(appFiles.map((f) => ({ name: f.path, mode: f.mode, data: f.data }))));
    const req = request({ steps: steps('echo "$PATH2" > out.txt && whoami && pwd') });
    const before = boots;
    await manager.start(req);
    const s = await finish(req);
    const logs = await allLogs(req);
    assert.equal(s.state, 'ready', `failure: ${JSON.stringify(s.failure)}\n${logs.join('\n')}`);
    assert.ok(logs.includes('[5] builder'), `RUN output streamed as step 5 entries:\n${logs.join('\n')}`);
    assert.ok(logs.includes('[5] /srv/work'));
    assert.ok(boots - before >= 4);
    const m = (await readManifest(store, req.buildId))!;
    assert.deepEqual(m.base, { kind: 'builtin', id: 'base' });
    assert.equal(m.user, 'builder');
    assert.equal(m.workdir, '/srv/work');
    assert.equal(m.env.PATH2, 'hello-world');
    assert.equal(m.layers.length, 5); // USER, WORKDIR, COPY, RUN, RUN
    assert.match(m.envdVersion, /^\d+\.\d+\.\d+$/);
    firstManifestLayers = m.layers.map((l) => l.digest);

    // Boot the manifest's stack as a sandbox would and look at the result.
    const dirs: string[] = [];
    for (const l of [...m.layers].reverse()) dirs.push(await layers.ensure(l.digest));
    dirs.push((await runtime.builtinRootfs('base'))!);
    const slot = await runtime.boot({ templateId: 'tpl1', layers: dirs, diskMb: 512, limits: { vcpu: 1, memoryMb: 256 } });
    try {
      const r = await runtime.exec(slot.slotId, ['/bin/bash', '-c', 'stat -c "%U:%G %a %n" /srv/work /srv/work/app/main.sh /srv/work/app/conf.txt; cat /srv/work/out.txt /etc/built-by; /srv/work/app/main.sh']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdout,
        'builder:builder 755 /srv/work\nbuilder:builder 750 /srv/work/app/main.sh\nbuilder:builder 750 /srv/work/app/conf.txt\nhello-world\nroot-was-here\nmain\n',
      );
    } finally {
      await runtime.destroy(slot.slotId);
    }
  });

  it('an unchanged rebuild is fully cached (no boot)', async () => {
    const req = request({ steps: steps('echo "$PATH2" > out.txt && whoami && pwd') });
    const before = boots;
    const t0 = Date.now();
    await manager.start(req);
    const s = await finish(req);
    const ms = Date.now() - t0;
    console.log(`fully cached rebuild: ${ms} ms`);
    assert.equal(s.state, 'ready', JSON.stringify(s.failure));
    assert.equal(boots, before, 'no sandbox booted');
    const m = (await readManifest(store, req.buildId))!;
    assert.deepEqual(m.layers.map((l) => l.digest), firstManifestLayers);
    const logs = await allLogs(req);
    assert.equal(logs.filter((l) => l.includes('CACHED')).length, 5);
  });

  it('force on a step rebuilds from that step on', async () => {
    const req = request({ steps: steps('echo "$PATH2" > out.txt && whoami && pwd', true) });
    const before = boots;
    await manager.start(req);
    const s = await finish(req);
    assert.equal(s.state, 'ready', JSON.stringify(s.failure));
    assert.equal(boots - before, 2, 'the forced RUN and the RUN after it');
    const logs = await allLogs(req);
    assert.equal(logs.filter((l) => l.includes('CACHED')).length, 3);
  });

  it('a failing RUN ends in ERROR with its step number and the logs', async () => {
    const req = request({ steps: [{ type: 'RUN', args: ['echo before-fail'] }, { type: 'RUN', args: ['echo oops >&2; exit 7'] }] });
    await manager.start(req);
    const s = await finish(req);
    assert.equal(s.state, 'error');
    assert.equal(s.failure?.step, '2');
    assert.match(s.failure!.message, /exit code 7/);
    // The failure message goes to the control plane: the step's output stays in the build log only.
    assert.doesNotMatch(s.failure!.message, /oops/);
    const logs = await allLogs(req);
    assert.ok(logs.includes('[2] oops'), logs.join('\n'));
    assert.equal(await readManifest(store, req.buildId), null);
  });

  it('a RUN as a user the stack lacks fails as that step, naming the user; one an earlier step made runs', async () => {
    const req = request({
      steps: [
        { type: 'RUN', args: ['useradd --create-home made-here 2>/dev/null || adduser -D made-here'] },
        { type: 'RUN', args: ['whoami', 'made-here'] },
        { type: 'RUN', args: ['echo never-$((6*7))', 'nobody-here'] },
      ],
    });
    await manager.start(req);
    const s = await finish(req);
    assert.equal(s.state, 'error');
    assert.equal(s.failure?.step, '3');
    assert.match(s.failure!.message, /user "nobody-here" does not exist/);
    const logs = await allLogs(req);
    assert.ok(logs.includes('[2] made-here'), logs.join('\n'));
    // The step's description names its command; its output (the expanded text) would prove it ran.
    assert.ok(!logs.some((l) => l.includes('never-42')), 'the step never ran');
  });

  it('refuses bad requests at once, naming the step', async () => {
    const bad = async (over: Parameters<typeof request>[0], re: RegExp) => {
      await assert.rejects(manager.start(request(over)), (err: Error) => (assert.match(err.message, re), true));
    };
    await bad({ steps: [{ type: 'RUN', args: ['true'] }, { type: 'FROB', args: [] }] }, /step 2 \(FROB\): unknown step type/);
    await bad({ steps: [{ type: 'COPY', args: ['a', '/a'] }] }, /step 1 \(COPY\): files_hash is required/);
    await bad({ steps: [{ type: 'COPY', args: ['../etc', '/a'], filesHash: appHash }] }, /step 1 \(COPY\): source leaves the build context/);
    await bad({ steps: [{ type: 'ENV', args: ['A'] }] }, /step 1 \(ENV\)/);
    await bad({ source: { case: undefined } }, /source/);
  });

  it('an unknown base fails with step "base"', async () => {
    const req = request({ source: { case: 'fromBuildId', value: 'no-such-build' }, steps: [{ type: 'RUN', args: ['true'] }] });
    await manager.start(req);
    const s = await finish(req);
    assert.equal(s.state, 'error');
    assert.equal(s.failure?.step, 'base');
  });

  it('refuses COPY sources that do not match their hash or leave the copied tree, writing nothing', async () => {
    const cases: { name: string; entries: TarEntry[]; hash?: string; re: RegExp }[] = [
      { name: 'mismatch', entries: [{ name: 'x.txt', data: 'tampered' }], hash: hashOf('x.txt', '/x', [{ path: 'x.txt', mode: 0o644, data: 'original' }]), re: /files hash mismatch/ },
      { name: 'dotdot', entries: [{ name: '../escape.txt', data: 'x' }], re: /contains \.\./ },
      // Symlinks may point anywhere (they are unpacked inside the build sandbox); a hard link names a file of the tar.
      { name: 'hardlink', entries: [{ name: 'link', type: 'link', linkname: '../../etc/shadow' }], re: /points outside/ },
      { name: 'absolute', entries: [{ name: '/abs.txt', data: 'x' }], re: /absolute/ },
    ];
    for (const c of cases) {
      const hash = c.hash ?? hashOf(c.name, '/x', [{ path: c.name, mode: 0o644, data: c.name }]);
      await upload(hash, await makeTar(c.entries));
      const before = boots;
      const req = request({ steps: [{ type: 'COPY', args: ['x.txt', '/x'], filesHash: hash }] });
      await manager.start(req);
      const s = await finish(req);
      assert.equal(s.state, 'error', c.name);
      assert.equal(s.failure?.step, '1', c.name);
      assert.match(s.failure!.message, c.re, c.name);
      assert.equal(boots, before, `${c.name}: refused before any sandbox boots`);
    }
  });

  it('BuildStatus pages (≤ 100 per page) and answers from storage for builds not in memory', async () => {
    const req = request({ steps: [{ type: 'RUN', args: ['seq 1 250'] }] });
    await manager.start(req);
    const s = await finish(req);
    assert.equal(s.state, 'ready', JSON.stringify(s.failure));
    const p1 = await manager.status(req.templateId, req.buildId, 0, 0);
    assert.equal(p1.entries.length, 100);
    const p3 = await manager.status(req.templateId, req.buildId, 200, 100);
    assert.ok(p3.entries.length > 0 && p3.entries.length < 100);
    const lines = (await allLogs(req)).filter((l) => /^\[1\] \d+$/.test(l));
    assert.equal(lines.length, 250);
    // A second manager on the same storage (a restarted or other node) answers from logs.jsonl + manifest.
    const other = new BuildManager({ runtime: counting, layers, store, workDir: join(I.dataDir, 'build-tmp2'), limits: { defaults: { vcpu: 1, memoryMb: 256, diskMb: 512 }, maxVcpu: 4, maxMemoryMb: 4096, maxDiskMb: 8192 }, concurrency: 1, log });
    const fromStore = await other.status(req.templateId, req.buildId, 100, 100);
    assert.equal(fromStore.state, 'ready');
    assert.equal(fromStore.entries.length, 100);
    assert.equal(fromStore.total, p1.total);
    await assert.rejects(other.status(req.templateId, 'never-built', 0, 100), /unknown/);
  });

  it('fromImage: the registry image layers become Cove layers (owners shifted), converted once', async () => {
    const layer = await makeTar(
      [
        { name: 'etc/', type: 'directory' },
        { name: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' },
        { name: 'opt/', type: 'directory' },
        { name: 'opt/hello.txt', data: 'from the image\n' },
      ],
      true,
    );
    const client = new RegistryClient({ url: registry.url, username: regUser, password: regPass });
    await pushImage(client, { repository: 'library/tiny', tags: ['1'], layers: [{ data: layer }], config: { env: ['PATH=/usr/bin:/bin', 'FROM_IMAGE=yes'] } });
    const req = request({ source: { case: 'fromImage', value: 'tiny:1' } });
    await manager.start(req);
    const s = await finish(req);
    assert.equal(s.state, 'ready', JSON.stringify(s.failure));
    const m = (await readManifest(store, req.buildId))!;
    assert.equal(m.base, null);
    assert.equal(m.layers.length, 1);
    assert.equal(m.user, 'root');
    assert.equal(m.env.FROM_IMAGE, 'yes');
    const dir = await layers.ensure(m.layers[0]!.digest);
    assert.equal(execFileSync('stat', ['-c', '%u %s', join(dir, 'opt', 'hello.txt')], { encoding: 'utf8' }), '100000 15\n');
    assert.ok((await allLogs(req)).some((l) => l.includes('converting layer')));
    const again = request({ source: { case: 'fromImage', value: 'tiny:1' } });
    await manager.start(again);
    assert.equal((await finish(again)).state, 'ready');
    assert.ok(!(await allLogs(again)).some((l) => l.includes('converting layer')), 'the converted layer is reused');
    const unknown = request({ source: { case: 'fromImage', value: 'nothere:1' } });
    await manager.start(unknown);
    const u = await finish(unknown);
    assert.equal(u.state, 'error');
    assert.equal(u.failure?.step, 'base');
  });

  it('finalize runs the start command and polls the ready command; a start command that dies fails at "finalize"', async () => {
    const ok = request({ startCmd: 'touch /tmp/up && sleep 600', readyCmd: '[ -f /tmp/up ]' });
    await manager.start(ok);
    const s = await finish(ok);
    assert.equal(s.state, 'ready', JSON.stringify(s.failure));
    const m = (await readManifest(store, ok.buildId))!;
    assert.equal(m.startCmd, 'touch /tmp/up && sleep 600');
    assert.equal(m.readyCmd, '[ -f /tmp/up ]');
    const bad = request({ startCmd: 'echo dying; exit 3', readyCmd: 'false' });
    await manager.start(bad);
    const b = await finish(bad);
    assert.equal(b.state, 'error');
    assert.equal(b.failure?.step, 'finalize');
    assert.match(b.failure!.message, /code 3/);
  });

  it('DeleteBuilds removes manifest and logs, and refuses while the build runs', async () => {
    const req = request({ steps: [{ type: 'RUN', args: ['sleep 2'] }] });
    await manager.start(req);
    await assert.rejects(manager.delete(req.templateId, [req.buildId]), /still running/);
    assert.equal((await finish(req)).state, 'ready');
    await manager.delete(req.templateId, [req.buildId]);
    assert.equal(await readManifest(store, req.buildId), null);
    await assert.rejects(manager.status(req.templateId, req.buildId, 0, 100), /unknown/);
  });
});
