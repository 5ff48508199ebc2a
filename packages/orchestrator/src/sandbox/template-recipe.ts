// A template recipe is a small declarative file (packages/orchestrator/templates/<id>/recipe.json).
// Its hash, together with the builder's own version, names the cached build so a changed recipe or
// a changed builder produces a new rootfs and an unchanged one is never rebuilt.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

/** Bump when the build steps in template-store.ts change what ends up in a rootfs. */
export const TEMPLATE_BUILDER_VERSION = 5;

/** An absolute path inside the rootfs with no `.`/`..` parts: written by the host into a tree it just built. */
const rootfsPath = z.string().regex(/^(\/[A-Za-z0-9_+@][A-Za-z0-9._+@-]*)+$/).refine((p) => !p.split('/').includes('..'), 'no .. parts');

const recipeSchema = z.object({
  id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/),
  description: z.string().optional(),
  suite: z.string().min(1),
  mirror: z.string().url(),
  variant: z.enum(['minbase', 'essential', 'apt', 'required', 'important', 'standard']),
  aptOptions: z.array(z.string()).default([]),
  packages: z.array(z.string().regex(/^[a-z0-9][a-z0-9+.-]*$/)).min(1),
  user: z.object({
    name: z.string().regex(/^[a-z_][a-z0-9_-]*$/),
    uid: z.number().int().min(1).max(60000),
    gid: z.number().int().min(1).max(60000),
    home: z.string().startsWith('/'),
    shell: z.string().startsWith('/'),
    passwordlessSudo: z.boolean(),
  }),
  /**
   * Files shipped beside the recipe (`<recipesDir>/<id>/<source>`) and written into the rootfs after the packages
   * are installed, owned by root. Their bytes are part of the recipe's hash, so changing one rebuilds the rootfs.
   */
  files: z
    .array(z.object({ path: rootfsPath, source: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/), mode: z.enum(['0644', '0755']) }))
    .default([]),
  /**
   * Symlinks made in the rootfs (e.g. a path a client expects, to a package's own directory). The target is relative
   * to the link's directory, so a host tool that ever looks at the tree is not pointed outside it.
   */
  links: z
    .array(
      z
        .object({ path: rootfsPath, target: z.string().regex(/^(\.\.\/)*[A-Za-z0-9_][A-Za-z0-9._/-]*$/) })
        .refine(
          (l) => {
            const parts = l.target.split('/');
            const ups = parts.filter((p) => p === '..').length;
            // Leading `..` only, and no more of them than the link's own depth: it stays inside the rootfs.
            return parts.slice(ups).every((p) => p !== '..' && p !== '.') && ups <= l.path.split('/').length - 2;
          },
          'link target must stay inside the rootfs',
        ),
    )
    .default([]),
});

export type TemplateRecipe = z.infer<typeof recipeSchema>;

export interface LoadedRecipe {
  recipe: TemplateRecipe;
  /** sha256 over the recipe bytes, its files' bytes and TEMPLATE_BUILDER_VERSION, first 16 hex digits. */
  hash: string;
  /** The bytes of each entry of `recipe.files`, in the same order. */
  fileContents: Buffer[];
}

/** Reads and validates `<recipesDir>/<templateId>/recipe.json`; null when there is no recipe for it. */
export async function loadRecipe(recipesDir: string, templateId: string): Promise<LoadedRecipe | null> {
  let raw: string;
  try {
    raw = await readFile(join(recipesDir, templateId, 'recipe.json'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const recipe = recipeSchema.parse(JSON.parse(raw));
  const fileContents = await Promise.all(recipe.files.map((f) => readFile(join(recipesDir, templateId, f.source))));
  const h = createHash('sha256').update(`builder=${TEMPLATE_BUILDER_VERSION}\n`).update(raw);
  // A recipe without files hashes as before (its cached builds stay valid).
  recipe.files.forEach((f, i) => h.update(`\nfile ${f.source} ${fileContents[i]!.length}\n`).update(fileContents[i]!));
  return { recipe, hash: h.digest('hex').slice(0, 16), fileContents };
}
