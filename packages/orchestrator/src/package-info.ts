// Where this package lives and which version it is. Compiled code runs from dist/src, sources from src, so
// the package root is found by walking up to the first package.json rather than by a fixed number of "..".

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: { root: string; version: string } | undefined;

function load(): { root: string; version: string } {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json of @cove/orchestrator not found');
    dir = up;
  }
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: string };
  cached = { root: dir, version: pkg.version ?? '0.0.0' };
  return cached;
}

/** Absolute path of packages/orchestrator. */
export function packageRoot(): string {
  return load().root;
}

/** The orchestrator's package version, reported in Info. */
export function packageVersion(): string {
  return load().version;
}
