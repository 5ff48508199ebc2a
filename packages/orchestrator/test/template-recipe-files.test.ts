// Files and links a recipe ships (the desktop template's scripts and /opt/noVNC): validated paths, hashed bytes,
// and a placement that never writes through a link or over something already there. No root needed.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readlink, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadRecipe, TEMPLATE_BUILDER_VERSION } from '../src/sandbox/template-recipe.js';
import { placeRecipeFiles } from '../src/sandbox/template-store.js';

const user = { name: 'user', uid: 1000, gid: 1000, home: '/home/user', shell: '/bin/bash', passwordlessSudo: true };
const base = { id: 't', suite: 'bookworm', mirror: 'http://deb.debian.org/debian', variant: 'minbase', packages: ['bash'], user };

describe('recipe files and links', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cove-recipe-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function recipe(extra: object, files: Record<string, string> = {}): Promise<string> {
    const recipes = await mkdtemp(join(dir, 'recipes-'));
    await mkdir(join(recipes, 't'));
    await writeFile(join(recipes, 't', 'recipe.json'), JSON.stringify({ ...base, ...extra }));
    for (const [name, body] of Object.entries(files)) await writeFile(join(recipes, 't', name), body);
    return recipes;
  }

  it('a recipe without files hashes as before (cached base and code-interpreter builds stay valid)', async () => {
    const recipes = await recipe({});
    const raw = await readFile(join(recipes, 't', 'recipe.json'), 'utf8');
    const want = createHash('sha256').update(`builder=${TEMPLATE_BUILDER_VERSION}\n`).update(raw).digest('hex').slice(0, 16);
    assert.equal((await loadRecipe(recipes, 't'))!.hash, want);
  });

  it("a file's bytes are part of the hash", async () => {
    const files = [{ path: '/usr/local/bin/x', source: 'x.sh', mode: '0755' }];
    const a = await loadRecipe(await recipe({ files }, { 'x.sh': 'echo a\n' }), 't');
    const b = await loadRecipe(await recipe({ files }, { 'x.sh': 'echo b\n' }), 't');
    assert.notEqual(a!.hash, b!.hash);
    assert.equal(a!.fileContents[0]!.toString(), 'echo a\n');
  });

  it('refuses paths with `..`, relative paths, sources outside the recipe dir and links that leave the rootfs', async () => {
    const bad: object[] = [
      { files: [{ path: '/usr/../etc/passwd', source: 'x.sh', mode: '0755' }] },
      { files: [{ path: 'usr/local/bin/x', source: 'x.sh', mode: '0755' }] },
      { files: [{ path: '/usr/local/bin/x', source: '../x.sh', mode: '0755' }] },
      { files: [{ path: '/usr/local/bin/x', source: 'x.sh', mode: '4755' }] },
      { links: [{ path: '/opt/noVNC', target: '/usr/share/novnc' }] },
      { links: [{ path: '/opt/noVNC', target: '../../etc' }] },
      { links: [{ path: '/opt/noVNC', target: '../usr/../../etc' }] },
    ];
    for (const extra of bad) await assert.rejects(async () => loadRecipe(await recipe(extra, { 'x.sh': 'x' }), 't'), JSON.stringify(extra));
    const ok = await loadRecipe(await recipe({ links: [{ path: '/opt/noVNC', target: '../usr/share/novnc' }] }), 't');
    assert.equal(ok!.recipe.links[0]!.target, '../usr/share/novnc');
  });

  it('places files under real directories only, never through a link or over an existing entry', async () => {
    const files = [{ path: '/usr/local/bin/x', source: 'x.sh', mode: '0755' }];
    const loaded = (await loadRecipe(await recipe({ files, links: [{ path: '/opt/noVNC', target: '../usr/share/novnc' }] }, { 'x.sh': 'echo x\n' }), 't'))!;

    const good = await mkdtemp(join(dir, 'rootfs-'));
    await placeRecipeFiles(loaded, good);
    assert.equal(await readFile(join(good, 'usr/local/bin/x'), 'utf8'), 'echo x\n');
    assert.equal((await lstat(join(good, 'usr/local/bin/x'))).mode & 0o7777, 0o755);
    assert.equal(await readlink(join(good, 'opt/noVNC')), '../usr/share/novnc');

    // A parent that is a link pointing out of the tree: nothing is written where it points.
    const outside = await mkdtemp(join(dir, 'outside-'));
    const linked = await mkdtemp(join(dir, 'rootfs-'));
    await mkdir(join(linked, 'usr'));
    await symlink(outside, join(linked, 'usr', 'local'));
    await assert.rejects(placeRecipeFiles(loaded, linked), /not a directory/);
    assert.deepEqual(await readdir(outside), []);

    // The file itself already there as a link: not followed, not replaced.
    const existing = await mkdtemp(join(dir, 'rootfs-'));
    await mkdir(join(existing, 'usr/local/bin'), { recursive: true });
    await symlink(join(outside, 'victim'), join(existing, 'usr/local/bin/x'));
    await assert.rejects(placeRecipeFiles(loaded, existing), { code: 'EEXIST' });
    assert.deepEqual(await readdir(outside), []);
  });
});
