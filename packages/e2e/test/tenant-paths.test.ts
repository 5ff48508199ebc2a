// Hostile tenant, path doors: links a tenant plants inside its own tree (at file level, at /etc itself, through
// /proc/self/root magic links, with ../ chains) by every way the SDK gives it (a template's start command as root,
// a RUN step, a running sandbox that is then snapshotted, paused and resumed in place, resumed on another node)
// must never make a node write or chown a host file. Host canaries outside every sandbox stay byte-identical and
// root-owned. Also: rebuilding envd and running `cove up` again leaves running sandboxes working.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox, Template, waitForFile } from 'e2b';
import { pushImage, RegistryClient } from '@cove/oci';
import { deployment, repoRoot, type Deployment } from './deployment.js';
import { nodeOf, setDraining } from './nodes.js';

const BUILD_TIMEOUT = 240_000;
const ETC_FILES = ['hostname', 'hosts', 'resolv.conf'];

describe('hostile tenant: links inside a sandbox never reach host files', () => {
  const tag = randomBytes(4).toString('hex');
  /** Host canaries: a directory shaped like /etc, and the same name the sandbox copies its /etc to. */
  const canaryDir = `/var/tmp/cove-canary-${tag}`;
  const expected = new Map<string, string>();
  const made: Sandbox[] = [];
  let d: Deployment;

  before(() => {
    d = deployment();
    mkdirSync(canaryDir, { mode: 0o755 });
    for (const f of [...ETC_FILES, 'passwd', 'cron']) {
      const content = `host canary ${f} ${tag}\n`;
      writeFileSync(join(canaryDir, f), content, { mode: 0o644 });
      expected.set(join(canaryDir, f), content);
    }
  });

  after(async () => {
    for (const s of made) await s.kill().catch(() => undefined);
    rmSync(canaryDir, { recursive: true, force: true });
  });

  function assertHostUntouched(when: string): void {
    assert.deepEqual(readdirSync(canaryDir).sort(), [...ETC_FILES, 'cron', 'passwd'].sort(), `${when}: nothing was added to the host canary dir`);
    for (const [path, content] of expected) {
      assert.equal(readFileSync(path, 'utf8'), content, `${when}: ${path} unchanged`);
      const st = statSync(path);
      assert.equal(st.uid, 0, `${when}: ${path} still owned by host root`);
      assert.equal(st.mode & 0o7777, 0o644, `${when}: ${path} mode unchanged`);
    }
  }

  /** Links from the sandbox's /etc files to the host canaries, spelled three ways. */
  const plantFileLinks = [
    `ln -sfn /proc/self/root${canaryDir}/hostname /etc/hostname`,
    `ln -sfn ${canaryDir}/hosts /etc/hosts`,
    `ln -sfn ../../../../../..${canaryDir}/resolv.conf /etc/resolv.conf`,
  ].join(' && ');

  async function etcFilesArePlain(sbx: Sandbox, hostname: string): Promise<void> {
    const r = await sbx.commands.run('for f in hostname hosts resolv.conf; do if [ -L /etc/$f ]; then echo "$f link"; fi; done; cat /etc/hostname');
    assert.equal(r.stdout.trim(), hostname, 'the node replaced the links with its own files, inside the sandbox');
  }

  test('a template whose start command, as root, links /etc files to host paths', { timeout: BUILD_TIMEOUT }, async () => {
    const t = Template()
      .fromTemplate('base')
      .setUser('root')
      .setStartCmd(`${plantFileLinks} && touch /tmp/planted && sleep infinity`, waitForFile('/tmp/planted'));
    const info = await Template.build(t, `e2e-links-start-${tag}`, { cpuCount: 1, memoryMB: 512 });
    assertHostUntouched('after the build');
    for (let i = 0; i < 2; i++) {
      const sbx = await Sandbox.create(info.name, { timeoutMs: 120_000 });
      made.push(sbx);
      await etcFilesArePlain(sbx, sbx.sandboxId);
      assertHostUntouched(`after create ${i + 1}`);
    }
  });

  test('a RUN step that makes /etc itself a link to a host directory (via /proc/self/root)', { timeout: BUILD_TIMEOUT }, async () => {
    // Inside the sandbox the link resolves to its own copy of /etc, so the sandbox keeps working; on the host the
    // same link names the host canary directory.
    const t = Template()
      .fromTemplate('base')
      .runCmd(`mkdir -p ${canaryDir} && cp -a /etc/. ${canaryDir}/ && rm -rf /etc && ln -s /proc/self/root${canaryDir} /etc`, { user: 'root' })
      .runCmd('echo still-works > /tmp/ok', { user: 'root' });
    const info = await Template.build(t, `e2e-links-etc-${tag}`, { cpuCount: 1, memoryMB: 512 });
    assertHostUntouched('after the build');
    const sbx = await Sandbox.create(info.name, { timeoutMs: 120_000 });
    made.push(sbx);
    assert.equal((await sbx.commands.run('readlink /etc; cat /tmp/ok')).stdout, `/proc/self/root${canaryDir}\nstill-works\n`);
    assertHostUntouched('after create');
  });

  test('a fromImage layer that carries the links', { timeout: BUILD_TIMEOUT }, async () => {
    // An image in the cluster registry: the seeded Debian layer, and on top a layer (as anyone who may push to
    // the registry could make it) with file-level links at the runtime's /etc files (the import drops those
    // paths) and /etc itself a /proc/self/root link to the host canary directory's path, under which the layer
    // carries the image's own copy of /etc, so the sandbox keeps working.
    const topology = JSON.parse(readFileSync(join(d.stateDir, 'topology.json'), 'utf8')) as { templateCacheDir: string; ports: { registry: number } };
    const seedDir = join(topology.templateCacheDir, '.images', 'debian-bookworm');
    const seed = readdirSync(seedDir).map((n) => join(seedDir, n, 'layer.tar.gz')).find((p) => existsSync(p));
    assert.ok(seed, 'cove up seeded debian:bookworm');
    const layer = join(canaryDir, '..', `cove-hostile-layer-${tag}.tar`);
    execFileSync('python3', ['-c', `
import tarfile, sys
seed, out, canary = sys.argv[1], sys.argv[2], sys.argv[3]
t = tarfile.open(out, 'w')
def link(name, target):
    ti = tarfile.TarInfo(name); ti.type = tarfile.SYMTYPE; ti.linkname = target; t.addfile(ti)
link('etc/hostname', '/proc/self/root' + canary + '/hostname')
link('etc/hosts', canary + '/hosts')
with tarfile.open(seed, 'r:gz') as s:
    for m in s:
        name = m.name[2:] if m.name.startswith('./') else m.name
        if name == 'etc' or name.startswith('etc/'):
            m.name = canary.lstrip('/') + name[3:]
            if m.islnk():
                target = m.linkname[2:] if m.linkname.startswith('./') else m.linkname
                if not target.startswith('etc/'): continue
                m.linkname = canary.lstrip('/') + target[3:]
            t.addfile(m, s.extractfile(m) if m.isfile() else None)
link('etc', '/proc/self/root' + canary)
t.close()
`, seed, layer, canaryDir]);
    try {
      const secrets = JSON.parse(readFileSync(join(d.stateDir, 'secrets.json'), 'utf8')) as { registryPassword: string };
      const client = new RegistryClient({ url: `http://127.0.0.1:${topology.ports.registry}`, username: 'cove', password: secrets.registryPassword });
      await pushImage(client, { repository: `cove-e2e/hostile-${tag}`, tags: ['1'], layers: [{ path: seed }, { path: layer }], config: { cmd: ['bash'] } });
    } finally {
      rmSync(layer, { force: true });
    }
    const t = Template().fromImage(`cove-e2e/hostile-${tag}:1`).runCmd('echo built > /tmp/built', { user: 'root' });
    const info = await Template.build(t, `e2e-links-image-${tag}`, { cpuCount: 1, memoryMB: 512 });
    assertHostUntouched('after the build');
    const sbx = await Sandbox.create(info.name, { timeoutMs: 120_000 });
    made.push(sbx);
    assert.equal((await sbx.commands.run('readlink /etc; cat /tmp/built')).stdout, `/proc/self/root${canaryDir}\nbuilt\n`);
    assertHostUntouched('after create');
  });

  test('COPY keeps links as E2B does: relative and absolute as links; resolveSymlinks copies targets', { timeout: BUILD_TIMEOUT }, async () => {
    const ctx = mkdtempSync(join(tmpdir(), 'cove-links-'));
    try {
      mkdirSync(join(ctx, 'links'));
      writeFileSync(join(ctx, 'links', 'real.txt'), 'real\n');
      symlinkSync('real.txt', join(ctx, 'links', 'rel'));
      symlinkSync(`${canaryDir}/hostname`, join(ctx, 'links', 'abs'));
      // (A dangling link the SDK itself cannot upload: it stats every entry. The node keeps one as a link:
      // orchestrator test copy-source.test.ts.)
      mkdirSync(join(ctx, 'resolved'));
      symlinkSync(join(ctx, 'links', 'real.txt'), join(ctx, 'resolved', 'was-link.txt'));
      const t = Template({ fileContextPath: ctx })
        .fromTemplate('base')
        .copy('links', '/links/')
        .copy('resolved', '/resolved/', { resolveSymlinks: true });
      const info = await Template.build(t, `e2e-copy-links-${tag}`, { cpuCount: 1, memoryMB: 512 });
      const sbx = await Sandbox.create(info.name, { timeoutMs: 120_000 });
      made.push(sbx);
      const r = await sbx.commands.run('cd /links && readlink rel abs && cat rel && test -f /resolved/was-link.txt && ! test -L /resolved/was-link.txt && cat /resolved/was-link.txt');
      assert.equal(r.stdout, `real.txt\n${canaryDir}/hostname\nreal\nreal\n`);
      assertHostUntouched('after copying links');
    } finally {
      rmSync(ctx, { recursive: true, force: true });
    }
  });

  test('a running sandbox plants links, then is snapshotted, paused and resumed in place, and resumed on another node', { timeout: 300_000 }, async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000 });
    made.push(sbx);
    const planted = await sbx.commands.run(`sudo sh -c '${plantFileLinks}' && ls -l /etc/hostname`);
    assert.match(planted.stdout, /->/);

    // A snapshot's copy boots a new slot over the snapshot's upper dir (links included).
    const snap = await sbx.createSnapshot();
    const copy = await Sandbox.create(snap.snapshotId, { timeoutMs: 60_000 });
    made.push(copy);
    await etcFilesArePlain(copy, copy.sandboxId);
    assertHostUntouched('after a start from the snapshot');
    await Sandbox.deleteSnapshot(snap.snapshotId);

    // Paused and resumed in place: the restored slot keeps its files as they were (links, inside).
    await copy.kill();
    await sbx.commands.run(`sudo sh -c '${plantFileLinks}'`);
    assert.equal(await sbx.pause(), true);
    const inPlace = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
    assert.equal((await inPlace.commands.run('echo alive')).stdout, 'alive\n');
    assertHostUntouched('after a resume in place');

    // Resumed on the other node: a new slot is prepared over the paused upper dir.
    assert.ok(d.nodes.length >= 2, 'cove test runs two nodes');
    const origin = await nodeOf(d, sbx.sandboxId);
    assert.ok(origin);
    assert.equal(await inPlace.pause(), true);
    await setDraining(d, origin, true);
    try {
      const moved = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
      const now = await nodeOf(d, sbx.sandboxId);
      assert.ok(now && now !== origin, 'resumed on the other node');
      await etcFilesArePlain(moved, sbx.sandboxId);
    } finally {
      await setDraining(d, origin, false);
    }
    assertHostUntouched('after a resume on another node');
  });
});

describe('a second cove up on a live deployment', () => {
  test('rebuilding envd and starting again leaves running sandboxes listing files and pausing/resuming', { timeout: 300_000 }, async () => {
    const d = deployment();
    const sbx = await Sandbox.create({ timeoutMs: 300_000 });
    try {
      await sbx.files.write('/home/user/before.txt', 'before');
      // What `./cove up` does on a checkout that is already up: rebuild envd's bundle in place, start what runs.
      execFileSync('npm', ['run', '--silent', 'bundle', '-w', '@cove/envd'], { cwd: repoRoot, stdio: 'ignore' });
      execFileSync(
        process.execPath,
        [join(repoRoot, 'packages/cli/dist/src/main.js'), 'up', '--state-dir', d.stateDir, '--port-offset', '100', '--warm-pool', 'base=2', '--nodes', String(d.nodes.length)],
        { stdio: 'ignore' },
      );
      const names = (await sbx.files.list('/home/user')).map((e) => e.name);
      assert.ok(names.includes('before.txt'), 'files.list still works (envd\'s lazily loaded modules are there)');
      assert.equal(await sbx.pause(), true);
      const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
      assert.equal(await back.files.read('/home/user/before.txt'), 'before');
      assert.equal((await back.commands.run('echo resumed')).stdout, 'resumed\n');
    } finally {
      await sbx.kill().catch(() => undefined);
    }
  });
});
