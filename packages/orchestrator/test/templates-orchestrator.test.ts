// Sandboxes of user templates end to end: layers made by exportUpper on the node's own runtime, stored in the
// node's cluster storage with a manifest, then Create{template_id, build_id} over gRPC boots on them, runs the
// build's start command as its user in its workdir with its env, waits for the ready command, and keeps a warm
// slot for the build. Unknown builds and layers are NOT_FOUND; a ready command that never passes fails the create.

import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { putArtifact } from '@cove/storage';
import { writeManifest, type BuildManifestInput } from '../src/templates/manifest.js';
import type { SlotInfo } from '../src/sandbox/runtime.js';
import {
  exists,
  instance,
  processClient,
  rpcClients,
  runInSandbox,
  spec,
  startOrchestrator,
  teardown,
  viaProxy,
  waitFor,
  type Running,
} from './orchestrator-fixture.js';

const I = instance('covtl2', 'tl2-', '10.221.0.0/16');
const STAND_IN = ['/opt/cove/bin/node', '-e', "require('http').createServer((q,s)=>{s.statusCode=204;s.end()}).listen(49983)"];
const TEMPLATE = 'tmpl-h1';

async function failure(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail('expected the call to fail');
}

describe('sandboxes of user templates', { timeout: 300_000 }, () => {
  let node: Running;
  let rpc: ReturnType<typeof rpcClients>;
  let work: string;
  let layers: Array<{ digest: string; size: number }> = [];

  const manifest = (buildId: string, over: Partial<BuildManifestInput> = {}): BuildManifestInput => ({
    version: 1,
    templateId: TEMPLATE,
    buildId,
    base: { kind: 'builtin', id: 'base' },
    layers,
    env: { GREETING: 'hi', FOO: 'from-manifest' },
    workdir: '/srv/app',
    user: 'user',
    startCmd: 'exec python3 -m http.server 8000 --bind 0.0.0.0 >/tmp/server.log 2>&1',
    readyCmd: 'curl -sf http://127.0.0.1:8000/index.html',
    vcpu: 1,
    memoryMb: 256,
    diskMb: 512,
    envdVersion: '0.0.0',
    createdAt: new Date().toISOString(),
    ...over,
  });

  /** Boots a helper slot on `stack`, runs `script` as root, exports its writable layer into storage. */
  const makeLayer = async (stack: string[], script: string): Promise<{ digest: string; size: number }> => {
    const rt = node.runtime;
    const slot: SlotInfo = await rt.boot({ templateId: 'base', layers: stack, diskMb: 128, limits: { vcpu: 1, memoryMb: 128 }, process: STAND_IN });
    try {
      const r = await rt.exec(slot.slotId, ['/bin/bash', '-c', script]);
      assert.equal(r.code, 0, r.stderr);
      const file = join(work, `${slot.slotId}.tar`);
      const { sha256, bytes } = await rt.exportUpper(slot.slotId, file);
      const put = await putArtifact(node.orchestrator.templates.store, createReadStream(file), { sha256, size: bytes });
      return { digest: put.sha256, size: put.size };
    } finally {
      await rt.destroy(slot.slotId);
    }
  };

  before(async () => {
    await teardown(I);
    // Short, so the never-ready case fails fast, yet room for python's http.server to start on a loaded 2-core
    // CI machine (3 s was once not enough: the ready command still could not connect).
    node = await startOrchestrator(I, { COVE_WARM_POOL: '', COVE_TEMPLATE_READY_TIMEOUT_MS: '10000' });
    rpc = rpcClients(node.rpcUrl);
    work = await mkdtemp(join(I.dataDir, 'w-'));
    const base = (await node.runtime.builtinRootfs('base'))!;
    const l1 = await makeLayer([base], [
      'mkdir -p /srv/app', 'echo v1 > /srv/app/index.html', 'echo gone > /srv/app/old.txt', 'rm /etc/debian_version',
      'chown -R user:user /srv/app',
    ].join(' && '));
    const dir1 = await node.orchestrator.templates.layerCache.ensure(l1.digest);
    const l2 = await makeLayer([dir1, base], [
      'echo v2 > /srv/app/index.html', 'rm /srv/app/old.txt', 'echo second > /srv/app/second.txt', 'chown user:user /srv/app/second.txt',
    ].join(' && '));
    layers = [l1, l2];
    await writeManifest(node.orchestrator.templates.store, manifest('build-h1-ok'));
  });

  after(async () => {
    await node?.close();
    await teardown(I);
  });

  it('creates a sandbox on the build: layers, env, user, workdir, start and ready commands', async () => {
    const started = Date.now();
    const res = await rpc.sandboxes.create({
      sandbox: spec({ sandboxId: 'tl-one', templateId: TEMPLATE, buildId: 'build-h1-ok', diskMb: 512, envVars: { FOO: 'from-create' } }),
    });
    const coldMs = Date.now() - started;
    assert.equal(res.warmPoolHit, false);
    assert.equal(res.sandbox?.buildId, 'build-h1-ok');
    const proc = processClient(node.proxyUrl, 'tl-one', '');
    const out = await runInSandbox(proc, [
      'echo "$GREETING $FOO"', 'whoami', 'pwd', 'cat index.html second.txt', 'ls old.txt 2>/dev/null || echo old-gone',
      'test -e /etc/debian_version || echo whiteout', 'ps -o user= -C python3', 'hostname',
    ].join('; '));
    assert.equal(out.exitCode, 0);
    assert.equal(out.stdout, 'hi from-create\nuser\n/srv/app\nv2\nsecond\nold-gone\nwhiteout\nuser\ntl-one\n');
    // The start command's server answers at once through the node proxy: ready was awaited.
    assert.deepEqual(await viaProxy(node.proxyUrl, 'tl-one', 8000, '/index.html'), { status: 200, body: 'v2\n' });
    assert.equal(node.orchestrator.manager.buildInUse('build-h1-ok'), true);
    assert.equal(node.orchestrator.manager.buildInUse('build-other'), false);

    // The build is now kept warm: the next create takes a slot whose server already runs.
    const pool = node.orchestrator.templates.buildPool;
    assert.ok(await waitFor(() => pool.stats().some((s) => s.buildId === 'build-h1-ok' && s.ready >= 1), 60_000), 'a warm slot of the build');
    const t2 = Date.now();
    const warm = await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tl-two', templateId: TEMPLATE, buildId: 'build-h1-ok', diskMb: 512 }) });
    const warmMs = Date.now() - t2;
    assert.equal(warm.warmPoolHit, true);
    assert.deepEqual(await viaProxy(node.proxyUrl, 'tl-two', 8000, '/index.html'), { status: 200, body: 'v2\n' });
    const env = await runInSandbox(processClient(node.proxyUrl, 'tl-two', ''), 'echo "$GREETING $FOO"; hostname');
    assert.equal(env.stdout, 'hi from-manifest\ntl-two\n');
    console.log(`# user-template create: cold ${coldMs} ms, warm ${warmMs} ms`);
    await rpc.sandboxes.delete({ sandboxId: 'tl-one' });
    await rpc.sandboxes.delete({ sandboxId: 'tl-two' });
    assert.equal(node.orchestrator.manager.buildInUse('build-h1-ok'), false);
  });

  it('a filesystem-only pause of a user-template sandbox boots the start command again on resume', async () => {
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tl-fs', templateId: TEMPLATE, buildId: 'build-h1-ok', diskMb: 512 }) });
    const before = await runInSandbox(processClient(node.proxyUrl, 'tl-fs', ''), 'echo kept > /srv/app/note.txt && pgrep -c -f [h]ttp.server');
    assert.equal(before.stdout, '1\n');
    await rpc.sandboxes.pause({ sandboxId: 'tl-fs', snapshotId: 'snap-tl-fs', memory: false });
    // A repeated Pause answers once the snapshot is committed (what the control plane does before a cold resume).
    await rpc.sandboxes.pause({ sandboxId: 'tl-fs', snapshotId: 'snap-tl-fs', memory: false });
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tl-fs', templateId: TEMPLATE, buildId: 'build-h1-ok', diskMb: 512, snapshotId: 'snap-tl-fs' }) });
    // The build's start command runs again (its ready command passed before the create answered) on the kept files.
    assert.deepEqual(await viaProxy(node.proxyUrl, 'tl-fs', 8000, '/note.txt'), { status: 200, body: 'kept\n' });
    const after = await runInSandbox(processClient(node.proxyUrl, 'tl-fs', ''), 'whoami; pwd; echo "$GREETING"');
    assert.equal(after.stdout, 'user\n/srv/app\nhi\n', 'the build\'s user, workdir and env');
    await rpc.sandboxes.delete({ sandboxId: 'tl-fs' });
  });

  it('answers NOT_FOUND for unknown builds, another template\'s build and missing layers', async () => {
    const create = (sandboxId: string, templateId: string, buildId: string) =>
      rpc.sandboxes.create({ sandbox: spec({ sandboxId, templateId, buildId, diskMb: 512 }) });
    assert.equal((await failure(create('tl-nf1', TEMPLATE, 'no-such-build'))).code, Code.NotFound);
    assert.equal((await failure(create('tl-nf2', 'other-template', 'build-h1-ok'))).code, Code.NotFound);
    assert.equal((await failure(create('tl-nf3', TEMPLATE, 'bad/build'))).code, Code.InvalidArgument);
    const lost = { digest: createHash('sha256').update('never stored').digest('hex'), size: 12 };
    await writeManifest(node.orchestrator.templates.store, manifest('build-h1-lost', { layers: [layers[0]!, lost] }));
    const e = await failure(create('tl-nf4', TEMPLATE, 'build-h1-lost'));
    assert.equal(e.code, Code.NotFound);
    assert.match(e.rawMessage, /not in cluster storage/);
    assert.deepEqual((await rpc.sandboxes.list({})).sandboxes, []);
  });

  it('fails the create clearly when the ready command never succeeds, and leaves no slot behind', async () => {
    // The start command exits at once: the failure says so, rather than leave a crash and a slow start alike.
    await writeManifest(node.orchestrator.templates.store, manifest('build-h1-never', { startCmd: 'exit 3', readyCmd: 'test -e /tmp/never' }));
    const before = (await node.runtime.listSlots()).map((s) => s.slotId);
    const t = Date.now();
    const e = await failure(rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tl-never', templateId: TEMPLATE, buildId: 'build-h1-never', diskMb: 512 }) }));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.match(e.rawMessage, /ready command did not succeed within 10000 ms \(last: exit code 1\); the start command \(pid \d+\) is no longer running/);
    assert.ok(Date.now() - t < 30_000);
    const afterIds = (await node.runtime.listSlots()).map((s) => s.slotId);
    assert.deepEqual(afterIds.filter((id) => !before.includes(id) && !node.orchestrator.templates.buildPool.slotIds().has(id)), []);
    assert.equal(node.orchestrator.templates.buildPool.stats().some((s) => s.buildId === 'build-h1-never'), false, 'a failing build is not kept warm');

    // No start and no ready command: ready at once, defaults from the manifest still apply.
    await writeManifest(node.orchestrator.templates.store, manifest('build-h1-plain', { startCmd: null, readyCmd: null, workdir: '/home/user' }));
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tl-plain', templateId: TEMPLATE, buildId: 'build-h1-plain', diskMb: 512 }) });
    const out = await runInSandbox(processClient(node.proxyUrl, 'tl-plain', ''), 'pwd; whoami; cat /srv/app/index.html');
    assert.equal(out.stdout, '/home/user\nuser\nv2\n');
    await rpc.sandboxes.delete({ sandboxId: 'tl-plain' });
  });

  it('re-adopts a user-template sandbox after a restart and never evicts the layers it stacks', async () => {
    await rpc.sandboxes.create({ sandbox: spec({ sandboxId: 'tl-keep', templateId: TEMPLATE, buildId: 'build-h1-ok', diskMb: 512 }) });
    const cache = node.orchestrator.templates.layerCache;
    const dirs = layers.map((l) => cache.dirOf(l.digest));
    // The node goes away with the sandbox running; the next one has a cache far too small for its layers.
    await node.close();
    node = await startOrchestrator(I, { COVE_WARM_POOL: '', COVE_LAYER_CACHE_MB: '1', COVE_TEMPLATE_WARM_POOL_SIZE: '0' });
    rpc = rpcClients(node.rpcUrl);
    const recovered = node.recovery;
    assert.deepEqual((await rpc.sandboxes.list({})).sandboxes.map((s) => s.sandboxId), ['tl-keep'], `recovery: ${JSON.stringify(recovered)}`);
    const again = node.orchestrator.templates.layerCache;
    assert.ok(layers.every((l) => again.has(l.digest)), `the cache reloaded its layers: ${JSON.stringify(again.stats())}`);
    // A new layer pushes the cache over its bound: eviction runs, but both layers are stacked by tl-keep.
    const base = (await node.runtime.builtinRootfs('base'))!;
    const extra = await makeLayer([base], 'head -c 2000000 /dev/urandom > /big.bin');
    await again.ensure(extra.digest);
    await again.settle();
    const inUse = [...(await node.runtime.layersInUse())];
    for (const d of dirs) assert.ok(await exists(d), `${d} kept; in use: ${inUse.join(' ')}`);
    assert.equal(again.has(extra.digest), false, `the one free layer went (nobody leased it): ${JSON.stringify(again.stats())}`);
    const out = await runInSandbox(processClient(node.proxyUrl, 'tl-keep', ''), 'cat /srv/app/index.html');
    assert.equal(out.stdout, 'v2\n');
    await rpc.sandboxes.delete({ sandboxId: 'tl-keep' });
    await rm(work, { recursive: true, force: true });
  });
});
