// A build's manifest, `templates/builds/<buildId>/manifest.json` (docs/template-builds.md, "Build manifest"):
// written once, last, by the build node; a build is ready exactly when it exists. Everything a node needs to
// run a sandbox of the build is in it: the full layer stack (bottom → top), env, user, workdir, start/ready.
// It is signed with the cluster's artifact key bound to the store (@cove/storage signDocument); an unsigned, forged
// or altered manifest is ManifestInvalid, so its layers are never fetched.

import type { BlobStore } from '@cove/storage';
import { artifactKeyOf, BlobNotFound, DocumentUntrusted, isSha256Hex, signDocument, verifyDocument } from '@cove/storage';
import { z } from 'zod';

/** Build ids become storage keys: no separators, no dots. E2B's are UUIDs. */
export const BUILD_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
/** Template ids as the control plane makes them (and `base`-like built-in ids). */
export const TEMPLATE_ID_RE = /^[a-z0-9][a-z0-9_.-]{0,127}$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const manifestSchema = z
  .object({
    version: z.literal(1),
    templateId: z.string().regex(TEMPLATE_ID_RE),
    buildId: z.string().regex(BUILD_ID_RE),
    /** A built-in template every node builds itself (bottom of the stack), or null: `layers` is the whole tree. */
    base: z.object({ kind: z.literal('builtin'), id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/) }).nullable(),
    /** Bottom → top, already including a parent template's layers. */
    layers: z
      .array(
        z.object({
          digest: z.string().refine(isSha256Hex, 'digest must be lowercase hex sha256'),
          size: z.number().int().nonnegative(),
        }),
      )
      .max(500),
    env: z.record(z.string().regex(ENV_NAME_RE), z.string().refine((v) => !v.includes('\0'), 'NUL in value')).default({}),
    /** Absolute; the default cwd of commands (envd's defaultWorkdir). */
    workdir: z.string().startsWith('/').max(4096),
    /** The default user of commands and files (envd's defaultUser). */
    user: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/),
    /** Run in the background (bash -l -c) when a sandbox starts; null = nothing. */
    startCmd: z.string().min(1).max(64 * 1024).nullable().default(null),
    /** Polled until it exits 0 before the sandbox counts as started; null = ready at once. */
    readyCmd: z.string().min(1).max(64 * 1024).nullable().default(null),
    vcpu: z.number().int().positive(),
    memoryMb: z.number().int().positive(),
    diskMb: z.number().int().positive(),
    envdVersion: z.string(),
    createdAt: z.string().datetime({ offset: true }),
  })
  .refine((m) => m.base !== null || m.layers.length > 0, { message: 'a build without a base needs layers', path: ['layers'] });

/** A parsed manifest (what readManifest returns and writeManifest takes). */
export type BuildManifest = z.output<typeof manifestSchema>;
/** What a writer may leave out (defaults: env {}, startCmd/readyCmd null). */
export type BuildManifestInput = z.input<typeof manifestSchema>;

export function manifestKey(buildId: string): string {
  if (!BUILD_ID_RE.test(buildId)) throw new ManifestInvalid(buildId, [`bad build id ${JSON.stringify(buildId.slice(0, 64))}`]);
  return `templates/builds/${buildId}/manifest.json`;
}

export class ManifestInvalid extends Error {
  readonly code = 'manifest_invalid';
  constructor(readonly buildId: string, readonly issues: string[]) {
    super(`manifest of build ${buildId} is invalid: ${issues.join('; ')}`);
    this.name = new.target.name;
  }
}

export class ManifestExists extends Error {
  readonly code = 'manifest_exists';
  constructor(readonly buildId: string) {
    super(`build ${buildId} already has a manifest (manifests are written once)`);
    this.name = new.target.name;
  }
}

/** What the manifest's mac is over (a snapshot manifest's is another). */
const PURPOSE = 'build-manifest';

function parse(buildId: string, value: unknown): BuildManifest {
  const r = manifestSchema.safeParse(value);
  if (!r.success) throw new ManifestInvalid(buildId, r.error.issues.map((i) => `${i.path.join('.') || 'manifest'}: ${i.message}`));
  if (r.data.buildId !== buildId) throw new ManifestInvalid(buildId, [`buildId is ${r.data.buildId}`]);
  return r.data;
}

/**
 * Validates and stores the manifest, making the build ready. Throws ManifestInvalid on a bad manifest and
 * ManifestExists when the build already has one (a manifest never changes once readers may have cached it).
 */
export async function writeManifest(store: BlobStore, manifest: BuildManifestInput): Promise<BuildManifest> {
  const m = parse(String(manifest.buildId), manifest);
  const key = manifestKey(m.buildId);
  if (await store.exists(key)) throw new ManifestExists(m.buildId);
  await store.put(key, Buffer.from(signDocument(artifactKeyOf(store), PURPOSE, m)));
  return m;
}

/** The build's manifest; null when there is none (no such build, or not ready). Throws ManifestInvalid when corrupt. */
export async function readManifest(store: BlobStore, buildId: string): Promise<BuildManifest | null> {
  const key = manifestKey(buildId);
  const artifactKey = artifactKeyOf(store);
  let text: string;
  try {
    const body = await store.get(key);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of body) {
      size += (c as Buffer).length;
      if (size > 1024 * 1024) {
        body.destroy();
        throw new ManifestInvalid(buildId, ['larger than 1 MiB']);
      }
      chunks.push(c as Buffer);
    }
    text = Buffer.concat(chunks).toString('utf8');
  } catch (err) {
    if (err instanceof BlobNotFound) return null;
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ManifestInvalid(buildId, ['not JSON']);
  }
  try {
    return parse(buildId, verifyDocument(artifactKey, PURPOSE, json, 'the manifest'));
  } catch (err) {
    if (err instanceof DocumentUntrusted) throw new ManifestInvalid(buildId, [err.message]);
    throw err;
  }
}
