// Seeds the cluster registry with `debian:bookworm` (no image hub is reachable, Debian's mirror is): a minbase
// rootfs tarball built once per machine with mmdebstrap, the base template's suite, mirror and apt options,
// cached under the shared templates dir keyed by that recipe, pushed as a one-layer OCI image.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createInterface } from 'node:readline';
import { createGzip } from 'node:zlib';
import { pushImage, type RegistryClient } from '@cove/oci';

export interface SeedRecipe {
  suite: string;
  mirror: string;
  variant: string;
  aptOptions: string[];
}

export interface SeedImage {
  repository: string;
  tags: string[];
  /** Cache directory name under `<templatesDir>/.images/`. */
  cacheName: string;
  config: { env: string[]; cmd: string[] };
}

/** What `debian:bookworm` means in the cluster registry (the tags Docker Hub's image has, minus slim's trimming). */
export const DEBIAN_BOOKWORM: SeedImage = {
  repository: 'library/debian',
  tags: ['bookworm', '12', 'latest', 'bookworm-slim'],
  cacheName: 'debian-bookworm',
  config: { env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], cmd: ['bash'] },
};

/** Bump when the way the tarball is made changes, so caches of the old way are not reused. */
const FORMAT = 1;

/** The base template's mirror and options (packages/orchestrator/templates/base/recipe.json), variant minbase. */
export function seedRecipeFrom(baseRecipeFile: string): SeedRecipe {
  const r = JSON.parse(readFileSync(baseRecipeFile, 'utf8')) as Partial<SeedRecipe>;
  if (typeof r.suite !== 'string' || typeof r.mirror !== 'string' || !Array.isArray(r.aptOptions)) {
    throw new Error(`${baseRecipeFile}: suite, mirror and aptOptions are required`);
  }
  return { suite: r.suite, mirror: r.mirror, variant: 'minbase', aptOptions: r.aptOptions };
}

export function recipeKey(recipe: SeedRecipe): string {
  const canonical = JSON.stringify({ format: FORMAT, suite: recipe.suite, mirror: recipe.mirror, variant: recipe.variant, aptOptions: recipe.aptOptions });
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}

/** Writes a plain rootfs tar (owners unshifted, as in any image) to `out`. */
export type TarballBuilder = (recipe: SeedRecipe, out: string, say: (line: string) => void) => Promise<void>;

/** mmdebstrap → tar: no /dev nodes (the runtime provides /dev), no apt caches, as Docker's debian image. */
export const mmdebstrapTarball: TarballBuilder = async (recipe, out, say) => {
  const args = [
    `--variant=${recipe.variant}`,
    '--mode=root',
    '--format=tar',
    '--skip=output/dev',
    ...recipe.aptOptions.map((o) => `--aptopt=${o}`),
    `--customize-hook=rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*`,
    recipe.suite,
    out,
    recipe.mirror,
  ];
  await new Promise<void>((resolve, reject) => {
    const child = spawn('mmdebstrap', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const tail: string[] = [];
    for (const s of [child.stdout, child.stderr]) {
      createInterface({ input: s }).on('line', (line) => {
        tail.push(line);
        if (tail.length > 20) tail.shift();
        if (/^I: /.test(line)) say(line);
      });
    }
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mmdebstrap exited with ${code}: ${tail.join('\n')}`))));
  });
};

/**
 * The cached gzipped layer for `recipe`, building it when absent. Built in a temp dir renamed into place, so a
 * crash never leaves a half tarball that looks usable; concurrent builders both finish and one rename wins.
 */
export async function ensureLayerTarball(
  cacheRoot: string,
  image: SeedImage,
  recipe: SeedRecipe,
  say: (line: string) => void,
  build: TarballBuilder = mmdebstrapTarball,
): Promise<string> {
  const dir = join(cacheRoot, '.images', image.cacheName, recipeKey(recipe));
  const layer = join(dir, 'layer.tar.gz');
  if (existsSync(join(dir, 'recipe.json'))) return layer;
  const tmp = join(cacheRoot, '.images', image.cacheName, `.build-${randomBytes(4).toString('hex')}`);
  mkdirSync(tmp, { recursive: true });
  try {
    const tar = join(tmp, 'rootfs.tar');
    await build(recipe, tar, say);
    await pipeline(createReadStream(tar), createGzip(), createWriteStream(join(tmp, 'layer.tar.gz')));
    rmSync(tar);
    writeFileSync(join(tmp, 'recipe.json'), JSON.stringify({ ...recipe, format: FORMAT, builtAt: new Date().toISOString() }, null, 2) + '\n');
    try {
      renameSync(tmp, dir);
    } catch (err) {
      if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return layer;
}

/** Makes sure the registry has every tag of `image`; builds (once per machine) and pushes only what is missing. */
export async function ensureSeedImage(
  client: RegistryClient,
  cacheRoot: string,
  image: SeedImage,
  recipe: SeedRecipe,
  say: (line: string) => void,
  build: TarballBuilder = mmdebstrapTarball,
): Promise<'present' | 'pushed'> {
  const name = `${image.repository.replace(/^library\//, '')}:${image.tags[0]}`;
  const missing: string[] = [];
  for (const tag of image.tags) if (!(await client.hasManifest(image.repository, tag))) missing.push(tag);
  if (missing.length === 0) {
    say(`registry: ${name} present`);
    return 'present';
  }
  const cached = existsSync(join(cacheRoot, '.images', image.cacheName, recipeKey(recipe), 'recipe.json'));
  if (!cached) say(`registry: building ${name} with mmdebstrap (once per machine, a minute or two)`);
  const layer = await ensureLayerTarball(cacheRoot, image, recipe, say, build);
  say(`registry: pushing ${name} (tags ${image.tags.join(', ')})`);
  // All tags, not only the missing ones, so they name one manifest (blobs the registry has are not sent again).
  await pushImage(client, {
    repository: image.repository,
    tags: image.tags,
    layers: [{ path: layer }],
    config: image.config,
    created: '2024-01-01T00:00:00Z',
  });
  say(`registry: ${name} pushed`);
  return 'pushed';
}
