// The OpenAPI document is the contract: the generated types must match it (regenerated here and compared),
// and every operation it lists must be served by a real handler (not the 501 catch-alls).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import type { HTTPMethods } from 'fastify';
import { NOT_IMPLEMENTED_ROUTES } from '../src/http/not-implemented-routes.js';
import { startControlPlane, type RunningControlPlane } from './fixtures/control-plane.js';

const PKG = fileURLToPath(new URL('../../', import.meta.url));
const SPEC = join(PKG, 'openapi/public.yaml');

/** (method, fastify path) of every operation in the spec; a line-level read of the YAML is enough for it. */
function specOperations(): Array<[HTTPMethods, string]> {
  const ops: Array<[HTTPMethods, string]> = [];
  let path: string | undefined;
  let inPaths = false;
  for (const line of readFileSync(SPEC, 'utf8').split('\n')) {
    if (/^paths:/.test(line)) inPaths = true;
    else if (/^\S/.test(line)) inPaths = false;
    if (!inPaths) continue;
    const p = /^ {2}(\/\S*):\s*$/.exec(line);
    if (p) path = p[1]!.replace(/\{([^}]+)\}/g, ':$1');
    const m = /^ {4}(get|post|put|patch|delete):/.exec(line);
    if (m && path) ops.push([m[1]!.toUpperCase() as HTTPMethods, path]);
  }
  return ops;
}

let cp: RunningControlPlane;
before(async () => {
  cp = await startControlPlane();
});
after(async () => {
  await cp.close();
});

test('src/gen/public-api.ts is what openapi-typescript makes of openapi/public.yaml', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-cp-gen-'));
  try {
    const out = join(dir, 'public-api.ts');
    const bin = fileURLToPath(new URL('../../../../node_modules/openapi-typescript/bin/cli.js', import.meta.url));
    execFileSync(process.execPath, [bin, SPEC, '--default-non-nullable=false', '-o', out], { stdio: 'pipe' });
    assert.equal(readFileSync(join(PKG, 'src/gen/public-api.ts'), 'utf8'), readFileSync(out, 'utf8'), 'run `npm run gen -w @cove/control-plane`');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every operation in the spec has a real handler', () => {
  const ops = specOperations();
  assert.ok(ops.length >= 14, `parsed ${ops.length} operations`);
  const stubbed = new Set(NOT_IMPLEMENTED_ROUTES.map(([m, u]) => `${m} ${u}`));
  for (const [method, url] of ops) {
    assert.ok(cp.cp.app.hasRoute({ method, url }), `${method} ${url} is not registered`);
    assert.ok(!stubbed.has(`${method} ${url}`), `${method} ${url} is only a 501 stub`);
  }
});
