// Team slugs: the namespace of a team's templates (`slug/name`, E2B's spelling). Lowercase letters, digits and
// single dashes, so a slug never contains the `/` or `:` that separate the parts of a template reference.

import { randomInt } from 'node:crypto';
import { z } from 'zod';

export const MAX_SLUG = 48;
export const SLUG_RE = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
export const SlugSchema = z.string().min(1).max(MAX_SLUG).regex(SLUG_RE, 'a slug is lowercase letters, digits and dashes, starting and ending with a letter or digit');

/** The slug a team name suggests: `Acme Corp.` → `acme-corp`; `team` when nothing usable is left. */
export function slugOf(name: string): string {
  const s = name
    .normalize('NFKD')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, MAX_SLUG - 7)
    .replace(/-+$/, '');
  return s || 'team';
}

/** The suggested slug with a random suffix, for when the plain one is taken. */
export function suffixedSlug(name: string): string {
  let suffix = '';
  for (let i = 0; i < 6; i++) suffix += 'abcdefghijklmnopqrstuvwxyz0123456789'[randomInt(36)];
  return `${slugOf(name)}-${suffix}`;
}
