// A template recipe is a small declarative file (packages/orchestrator/templates/<id>/recipe.json).
// Its hash, together with the builder's own version, names the cached build so a changed recipe or
// a changed builder produces a new rootfs and an unchanged one is never rebuilt.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

/** Bump when the build steps in template-build.ts change what ends up in a rootfs. */
export const TEMPLATE_BUILDER_VERSION = 4;

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
});

export type TemplateRecipe = z.infer<typeof recipeSchema>;

export interface LoadedRecipe {
  recipe: TemplateRecipe;
  /** sha256 over the recipe bytes and TEMPLATE_BUILDER_VERSION, first 16 hex digits. */
  hash: string;
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
  const hash = createHash('sha256')
    .update(`builder=${TEMPLATE_BUILDER_VERSION}\n`)
    .update(raw)
    .digest('hex')
    .slice(0, 16);
  return { recipe, hash };
}
