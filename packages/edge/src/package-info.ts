// The edge's version, from its package.json. Compiled code runs from dist/src, sources from src, so the
// package root is found by walking up to the first package.json rather than by a fixed number of "..".

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The @cove/edge package version, reported by GET /v1/info. */
export function packageVersion(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) return (cached = '0.0.0');
    dir = up;
  }
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: string };
  return (cached = pkg.version ?? '0.0.0');
}
