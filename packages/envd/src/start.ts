// envd's launcher (the bundle's ENVD_START, bundled on its own): runs ENVD_ENTRY compiled from V8's code cache when
// the bundle holds one that fits this node binary and these flags, and compiles it as usual otherwise; a cache V8
// rejects only costs the ~20 ms of compiling it was to save (docs/performance.md, "envd's code cache"). The node host
// makes the cache when it installs the bundle (the orchestrator's envd-install.ts) by running this launcher with
// COVE_ENVD_WRITE_CODE_CACHE=1: envd then builds itself without listening (main.ts), and the cache of everything that
// start compiled is written to fd 3. A sandbox never makes or changes one: the bundle is mounted read-only.

import { readFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Script } from 'node:vm';
import { ENVD_CODE_CACHE, ENVD_ENTRY, ENVD_WRITE_CODE_CACHE_ENV } from '@cove/contracts/sandbox';
import { CODE_CACHE_STATE, type CodeCacheState } from './code-cache.js';

// The CommonJS wrapper Node's own loader puts around a module, on a line of its own so line numbers stay right.
const WRAPPER = '(function (exports, require, module, __filename, __dirname) {\n';
const dir = __dirname;
const file = join(dir, ENVD_ENTRY);
const writing = process.env[ENVD_WRITE_CODE_CACHE_ENV] === '1';

let cachedData: Buffer | undefined;
if (!writing) {
  try {
    cachedData = readFileSync(join(dir, ENVD_CODE_CACHE));
  } catch {
    // No cache in this bundle: compiled as usual.
  }
}
const script = new Script(`${WRAPPER}${readFileSync(file, 'utf8')}\n})`, {
  filename: file,
  lineOffset: -1,
  // No importModuleDynamically: a script compiled from a code cache loses it on Node 20, so the bundle has no import()
  // (scripts/bundle.mjs refuses one).
  ...(cachedData ? { cachedData } : {}),
});
const state: CodeCacheState = cachedData ? (script.cachedDataRejected ? 'rejected' : 'used') : 'none';
(globalThis as Record<symbol, unknown>)[CODE_CACHE_STATE] = state;

const mod = { exports: {} };
(script.runInThisContext() as (...args: unknown[]) => void).call(mod.exports, mod.exports, createRequire(file), mod, file, dir);

if (writing) {
  writeSync(3, script.createCachedData());
  process.exit(0);
}
