// The build context E2B threads through the steps (metadata.Context in e2b-infra): env, user, workdir. ENV,
// WORKDIR and USER change it; it is computed on the host from the steps alone, so a fully cached rebuild
// knows the final context without booting anything.

import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import type { BuildStep } from './validate-request.js';

export interface BuildContext {
  env: Record<string, string>;
  user: string;
  /** Unset until a WORKDIR: commands then run in the user's home (envd's default). */
  workdir: string | undefined;
}

/** Image builds start as root with no workdir, as E2B's base phase does (defaultUser = "root"). */
export function initialContext(env: Record<string, string> = {}): BuildContext {
  return { env: { ...env }, user: 'root', workdir: undefined };
}

/** Home a user gets from useradd --create-home (root's is /root). */
export function homeOf(user: string): string {
  return user === 'root' ? '/root' : `/home/${user}`;
}

/** Where relative paths resolve: the workdir, else the user's home. */
export function cwdOf(ctx: BuildContext): string {
  return ctx.workdir ?? homeOf(ctx.user);
}

/**
 * `$VAR` and `${VAR}` expanded from the context (unknown → empty, `\$` keeps a literal dollar). E2B evaluates
 * the value with printf in the VM; expanding here gives the same result for variable references without
 * running anything, and never runs command substitutions.
 */
export function expandEnv(value: string, env: Record<string, string>): string {
  return value.replace(/\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a?: string, b?: string) => {
    if (m === '\\$') return '$';
    return env[(a ?? b)!] ?? '';
  });
}

/** The context after `step` (RUN and COPY leave it unchanged). */
export function applyStep(ctx: BuildContext, step: BuildStep): BuildContext {
  switch (step.type) {
    case 'ENV': {
      const env = { ...ctx.env };
      for (let i = 0; i < step.args.length; i += 2) env[step.args[i]!] = expandEnv(step.args[i + 1]!, env);
      return { ...ctx, env };
    }
    case 'WORKDIR':
      return { ...ctx, workdir: resolveIn(ctx, expandEnv(step.args[0]!, ctx.env)) };
    case 'USER':
      return { ...ctx, user: step.args[0]! };
    default:
      return ctx;
  }
}

/** An absolute, normalised path: relative ones resolve against the current workdir. */
export function resolveIn(ctx: BuildContext, path: string): string {
  return posix.resolve(cwdOf(ctx), path);
}

/** sha256 hex of the parts joined with NUL (no part can contain NUL: validate-request refuses it). */
export function sha256Of(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\0')).digest('hex');
}

/**
 * layerKey = sha256(parent key + canonical step JSON + files hash). Every step is chained, ENV included, so a
 * step's key covers the context it ran in. `force` is not part of the key: a forced step overwrites the entry.
 */
export function stepKey(parent: string, step: BuildStep): string {
  return sha256Of(parent, JSON.stringify({ type: step.type, args: step.args }), step.filesHash);
}
