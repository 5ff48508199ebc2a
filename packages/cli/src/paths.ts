import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: this file is packages/cli/dist/src/paths.js once built. */
export const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');

/** Where one deployment keeps its pids, logs, secrets, databases and env file. */
export interface StatePaths {
  dir: string;
  run: string;
  logs: string;
  data: string;
  secrets: string;
  state: string;
  env: string;
}

export function statePaths(dir: string): StatePaths {
  const abs = resolve(dir);
  return {
    dir: abs,
    run: join(abs, 'run'),
    logs: join(abs, 'logs'),
    data: join(abs, 'data'),
    secrets: join(abs, 'secrets.json'),
    state: join(abs, 'state.json'),
    env: join(abs, 'env'),
  };
}

/** Entry point of a component package once built. */
export function componentEntry(pkg: string): string {
  return join(repoRoot, 'packages', pkg, 'dist', 'src', 'main.js');
}
