// The body of `POST /v2/templates/{id}/builds/{buildID}` (E2B's TemplateBuildStartV2) as the SDK serialises a
// `Template` (e2b-sdk.md §2.2). Each step's args are checked here, so a bad step is a 400 naming the step
// before anything reaches a node. Unknown extra fields (the SDK's client-only `forceUpload`, `gzip`, …) are
// dropped.

import { z } from 'zod';
import { BadRequest } from '../errors.js';
import type { components } from '../gen/public-api.js';

const HASH_RE = /^[0-9a-f]{64}$/;
const cmd = z.string().max(64 * 1024);
const arg = z.string().max(64 * 1024);

const StepSchema = z
  .object({
    type: z.string().max(32),
    args: z.array(arg).max(1000).default([]),
    force: z.boolean().default(false),
    filesHash: z.string().max(128).optional(),
  })
  .superRefine((s, ctx) => {
    const bad = (message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, message });
    const n = s.args.length;
    switch (s.type) {
      case 'RUN':
        if (n < 1 || n > 2 || s.args[0]!.trim() === '') bad('RUN takes [command, user?] with a non-empty command');
        break;
      case 'COPY':
        if (n < 2 || n > 4 || s.args[0] === '' || s.args[1] === '') bad('COPY takes [src, dest, owner?, mode?] with non-empty src and dest');
        else if (n === 4 && s.args[3] !== '' && !/^[0-7]{3,4}$/.test(s.args[3]!)) bad(`COPY mode '${s.args[3]}' is not an octal mode`);
        if (s.filesHash === undefined) bad('COPY needs filesHash (the hash of the uploaded files)');
        else if (!HASH_RE.test(s.filesHash)) bad('filesHash must be 64 lowercase hex digits (sha256)');
        break;
      case 'ENV':
        if (n < 2 || n % 2 !== 0) bad('ENV takes [key, value, key, value, …]');
        else for (let i = 0; i < n; i += 2) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(s.args[i]!)) bad(`ENV name '${s.args[i]}' is not a valid variable name`);
        break;
      case 'WORKDIR':
        if (n !== 1 || s.args[0] === '') bad('WORKDIR takes [path]');
        break;
      case 'USER':
        if (n < 1 || n > 2 || !/^[a-z_][a-z0-9_-]*\$?$/i.test(s.args[0]!)) bad('USER takes [name, addToSudo?] with a valid user name');
        break;
      default:
        bad(`unknown step type '${s.type}' (expected RUN, COPY, ENV, WORKDIR or USER)`);
    }
    if (s.type !== 'COPY' && s.filesHash !== undefined && s.filesHash !== '') bad(`filesHash only belongs on COPY steps`);
  });

const RegistrySchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('registry'), username: z.string().max(1024), password: z.string().max(16 * 1024) }),
  z.object({ type: z.literal('aws'), awsAccessKeyId: z.string(), awsSecretAccessKey: z.string(), awsRegion: z.string() }),
  z.object({ type: z.literal('gcp'), serviceAccountJson: z.string() }),
]);

export const BuildStartSchema = z
  .object({
    fromImage: z.string().min(1).max(1024).optional(),
    fromTemplate: z.string().min(1).max(300).optional(),
    fromImageRegistry: RegistrySchema.optional(),
    force: z.boolean().default(false),
    steps: z.array(StepSchema).max(1000, 'at most 1000 steps').default([]),
    startCmd: cmd.optional(),
    readyCmd: cmd.optional(),
  })
  .superRefine((b, ctx) => {
    if ((b.fromImage === undefined) === (b.fromTemplate === undefined)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'exactly one of fromImage and fromTemplate is required' });
    }
    if (b.fromImageRegistry && b.fromImage === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['fromImageRegistry'], message: 'fromImageRegistry only applies to fromImage' });
    }
  }) satisfies z.ZodType<unknown, z.ZodTypeDef, components['schemas']['TemplateBuildStartV2']>;

export type BuildStart = z.output<typeof BuildStartSchema>;

/** Parses the body; a failure is one 400 naming each bad step by its 1-based number, as build logs do. */
export function parseBuildStart(body: unknown): BuildStart {
  const r = BuildStartSchema.safeParse(body);
  if (r.success) return r.data;
  const steps = (body as { steps?: Array<{ type?: unknown }> } | undefined)?.steps;
  const issues = r.error.issues.map((i) => {
    const [head, index, ...rest] = i.path;
    if (head === 'steps' && typeof index === 'number') {
      const type = Array.isArray(steps) && typeof steps[index]?.type === 'string' ? ` (${String(steps[index]!.type)})` : '';
      return `step ${index + 1}${type}${rest.length ? ` ${rest.join('.')}` : ''}: ${i.message}`;
    }
    return i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message;
  });
  throw new BadRequest(`invalid build: ${issues.join('; ')}`);
}
