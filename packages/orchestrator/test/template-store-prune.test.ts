// The template cache's clean-up never deletes through a mount. A builder killed mid-build (the node restarted, a
// test's orchestrator stopped) leaves its `.build-*` dir with mmdebstrap's binds of host /dev, /proc and /sys;
// a superseded build can hold a mount too. Each stand-in bind here shows a "host" dir whose file must survive.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { access, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '../src/logger.js';
import { MountTable, mountsUnder, removeTree, unmountEach, unmountTree } from '../src/sandbox/mount-tree.js';
import { run } from '../src/sandbox/run-command.js';
import { loadRecipe } from '../src/sandbox/template-recipe.js';
import { TemplateStore } from '../src/sandbox/template-store.js';
import { TemplateBuildFailed } from '../src/sandbox/runtime-errors.js';

const recipe = {
  id: 't',
  suite: 'bookworm',
  mirror: 'http://deb.debian.org/debian',
  variant: 'minbase',
  packages: ['bash'],
  user: { name: 'user', uid: 1000, gid: 1000, home: '/home/user', shell: '/bin/bash', passwordlessSudo: false },
};

const exists = (p: string) => access(p).then(() => true, () => false);

describe('template cache clean-up', { skip: process.getuid?.() !== 0 ? 'needs root (mount)' : false }, () => {
  let root: string;
  let sleeper: ReturnType<typeof spawn> | undefined;
  before(async () => {
    root = await mkdtemp('/var/tmp/cove-prune-test-');
  });
  after(async () => {
    sleeper?.kill('SIGKILL');
    await unmountTree(root);
    await rm(root, { recursive: true, force: true });
  });

  async function hostDir(name: string): Promise<string> {
    const d = join(root, name);
    await mkdir(d);
    await writeFile(join(d, 'keep'), 'host file');
    return d;
  }

  async function bindInto(dir: string, source: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    await run('mount', ['--bind', source, dir]);
  }

  /** `host` bound twice at `<tree>/a` (stacked), and once more at `<tree>/a/nested`. */
  async function stackedAndNested(tree: string, host: string): Promise<void> {
    await bindInto(join(tree, 'a'), host);
    await run('mount', ['--bind', host, join(tree, 'a')]);
    await bindInto(join(tree, 'a', 'nested'), host);
  }

  it("removes a dead builder's dir and a superseded build without touching what is bound inside them", async () => {
    const recipes = join(root, 'recipes');
    await mkdir(join(recipes, 't'), { recursive: true });
    await writeFile(join(recipes, 't', 'recipe.json'), JSON.stringify(recipe));
    const { hash } = (await loadRecipe(recipes, 't'))!;
    const templates = join(root, 'templates');
    const dir = join(templates, 't');
    // The current build is complete, so ensure() builds nothing and goes straight to the clean-up.
    await mkdir(join(dir, hash, 'rootfs'), { recursive: true });
    await writeFile(join(dir, hash, 'template.json'), '{}');

    const dead = spawn('true');
    await once(dead, 'exit');
    sleeper = spawn('sleep', ['600']);
    const devShm = await hostDir('host-dev-shm');
    const hostDev = await hostDir('host-dev');
    const killed = join(dir, `.build-${hash}-${dead.pid}-0a0a0a0a`);
    const running = join(dir, `.build-${hash}-${sleeper.pid}-0b0b0b0b`);
    const ours = join(dir, `.build-${hash}-${process.pid}-0c0c0c0c`);
    const superseded = join(dir, '0123456789abcdef');
    await bindInto(join(killed, 'rootfs', 'dev', 'shm'), devShm);
    await bindInto(join(superseded, 'extract', 'dev'), hostDev);
    await mkdir(join(running, 'rootfs'), { recursive: true });
    await mkdir(join(ours, 'rootfs'), { recursive: true });

    const store = new TemplateStore({ templatesDir: templates, recipesDir: recipes, idOffset: 100_000, logger: createLogger('error') });
    assert.equal(await store.ensure('t'), join(dir, hash, 'rootfs'));

    assert.equal(await exists(join(devShm, 'keep')), true, 'the host dir bound into the killed build survives');
    assert.equal(await exists(join(hostDev, 'keep')), true, 'the host dir bound into the superseded build survives');
    assert.equal(await exists(killed), false, "the dead builder's dir is gone");
    assert.equal(await exists(superseded), false, 'the superseded build is gone');
    assert.equal(await exists(running), true, 'a live builder keeps its dir');
    assert.equal(await exists(ours), true, "this process's own build dir is kept");
    assert.deepEqual(await mountsUnder(templates), []);
    assert.deepEqual((await readdir(dir)).sort(), [hash, 'current', `.build-${hash}-${process.pid}-0c0c0c0c`, `.build-${hash}-${sleeper.pid}-0b0b0b0b`].sort());
  });

  it("removes a dead builder's dir before building, also when that build fails (builds that never complete left one each)", async () => {
    const recipes = join(root, 'recipes-failing');
    await mkdir(join(recipes, 'f'), { recursive: true });
    // Nothing listens on port 9: mmdebstrap fails at its first download.
    await writeFile(join(recipes, 'f', 'recipe.json'), JSON.stringify({ ...recipe, id: 'f', mirror: 'http://127.0.0.1:9/debian' }));
    const { hash } = (await loadRecipe(recipes, 'f'))!;
    const templates = join(root, 'templates-failing');
    const dir = join(templates, 'f');
    const dead = spawn('true');
    await once(dead, 'exit');
    const killed = join(dir, `.build-${hash}-${dead.pid}-0d0d0d0d`);
    await mkdir(join(killed, 'rootfs', 'usr'), { recursive: true });

    const store = new TemplateStore({ templatesDir: templates, recipesDir: recipes, idOffset: 100_000, logger: createLogger('error') });
    await assert.rejects(store.ensure('f'), TemplateBuildFailed);
    assert.equal(await exists(killed), false, "the dead builder's dir is gone");
    assert.deepEqual(await readdir(dir), [], 'and the failed build took its own dir with it');
  });

  it('removeTree takes out stacked and nested mounts before deleting', async () => {
    const host = await hostDir('host-stacked');
    const tree = join(root, 'tree');
    await stackedAndNested(tree, host);
    await removeTree(tree);
    assert.equal(await exists(tree), false);
    assert.equal(await exists(join(host, 'keep')), true);
  });

  it('unmountEach takes out what one read of the table showed, stacked, nested or listed twice, and what came after it', async () => {
    // A slot's teardown (slot-disk.ts) reads the table once and passes it here, instead of a read per umount.
    const host = await hostDir('host-each');
    const tree = join(root, 'each');
    await stackedAndNested(tree, host);
    const table = await MountTable.read();
    assert.deepEqual(table.under(tree), [join(tree, 'a', 'nested'), join(tree, 'a'), join(tree, 'a')]);
    assert.equal(table.count(join(tree, 'a')), 2);
    // Mounted after the table was read: only the check after the first pass can see it.
    await bindInto(join(tree, 'late'), host);
    await unmountEach([...table.under(tree), join(tree, 'late'), join(tree, 'a')], table);
    assert.deepEqual(await mountsUnder(tree), []);
    assert.equal(await exists(join(host, 'keep')), true);
  });
});
