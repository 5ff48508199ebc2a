// Template names, tags and references (`name`, `name:tag`, `namespace/name[:tag]`, or a template id), and the ids
// the control plane mints. A name is unique within its team; `namespace` is a team's slug (E2B's spelling). Names are what sandboxes are created from, so they stay in a conservative charset: lowercase letters,
// digits, `.`, `_` and `-`; tags may also use uppercase (release names like `v1.2-RC`).

import { randomInt, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { MAX_SLUG, SlugSchema } from '../store/team-slug.js';

export const DEFAULT_TAG = 'default';
export const MAX_NAME = 128;
export const MAX_TAG = 128;
/** Tags per request (E2B accepts a handful; a long list is a mistake rather than a need). */
export const MAX_TAGS = 20;

const NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;
const TAG_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const NAME_RULE = "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit";
export const TAG_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit";

export const TagSchema = z.string().min(1, 'a tag must not be empty').max(MAX_TAG).regex(TAG_RE, `a tag must be ${TAG_RULE}`);
export const TagListSchema = z.array(TagSchema).max(MAX_TAGS, `at most ${MAX_TAGS} tags`);

export interface TemplateRef {
  /** `namespace/name` when the reference named a namespace, else `name`. */
  name: string;
  tag: string | undefined;
}

/** Splits `[namespace/]name[:tag]` without validating (lookups of unknown refs simply find nothing). */
export function splitRef(ref: string): TemplateRef {
  const i = ref.lastIndexOf(':');
  return i < 0 ? { name: ref, tag: undefined } : { name: ref.slice(0, i), tag: ref.slice(i + 1) };
}

/** Splits `namespace/name` (the part before the tag); `namespace` is undefined for a bare name. */
export function splitNamespace(name: string): { namespace: string | undefined; name: string } {
  const i = name.indexOf('/');
  return i < 0 ? { namespace: undefined, name } : { namespace: name.slice(0, i), name: name.slice(i + 1) };
}

/**
 * The name within the team's own namespace: `name` as it is, `<own slug>/name` without the slug, and undefined for
 * another team's namespace. For what is never shared across teams (persistent snapshots).
 */
export function ownName(qualified: string, ownSlug: string): string | undefined {
  const { namespace, name } = splitNamespace(qualified);
  return namespace === undefined || namespace === ownSlug ? name : undefined;
}

/** `[namespace/]name` or `…:tag`, validated; the message names what is wrong. */
export const NameRefSchema = z
  .string()
  .min(1, 'name must not be empty')
  .max(MAX_SLUG + 1 + MAX_NAME + 1 + MAX_TAG)
  .superRefine((ref, ctx) => {
    const { name: qualified, tag } = splitRef(ref);
    const { namespace, name } = splitNamespace(qualified);
    if (namespace !== undefined && !SlugSchema.safeParse(namespace).success) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `namespace '${namespace}' is invalid: a team slug is lowercase letters, digits and dashes` });
    }
    if (name.length === 0 || name.length > MAX_NAME || !NAME_RE.test(name)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `template name '${name}' is invalid: use up to ${MAX_NAME} ${NAME_RULE}` });
    }
    if (tag !== undefined && !TagSchema.safeParse(tag).success) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `tag '${tag}' is invalid: use up to ${MAX_TAG} ${TAG_RULE}` });
    }
  })
  .transform(splitRef);

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** Template ids look like E2B's: 20 of [a-z0-9]. */
export function newTemplateId(): string {
  let id = '';
  for (let i = 0; i < 20; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

/** Build ids are UUIDs, as E2B's. */
export function newBuildId(): string {
  return randomUUID();
}

/**
 * E2B's default base image (`Template()` without a `from…`, and `fromBaseImage()`). E2B's meaning of it is its
 * standard sandbox image, which in Cove is the built-in `base` template, so it maps there rather than to a pull.
 */
export function isE2bBaseImage(ref: string): boolean {
  const r = ref.trim().toLowerCase().replace(/^(docker\.io|index\.docker\.io|registry-1\.docker\.io)\//, '');
  return /^e2bdev\/base(:[\w][\w.-]*)?(@sha256:[0-9a-f]{64})?$/.test(r);
}
