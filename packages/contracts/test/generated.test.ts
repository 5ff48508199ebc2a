import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// dist/test/generated.test.js -> package root
const pkg = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
}

test('generated code matches the .proto contracts (no hand edits, no stale output)', () => {
  const out = mkdtempSync(join(tmpdir(), 'cove-gen-'));
  try {
    const template = join(out, 'buf.gen.yaml');
    writeFileSync(template, readFileSync(join(pkg, 'buf.gen.yaml'), 'utf8').replace('out: src/gen', `out: ${join(out, 'gen')}`));
    const bin = join(pkg, '../../node_modules/.bin');
    execFileSync(join(bin, 'buf'), ['generate', '../../proto', '--template', template], {
      cwd: pkg,
      stdio: 'pipe',
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    });
    const fresh = files(join(out, 'gen')).map((f) => relative(join(out, 'gen'), f)).sort();
    const committed = files(join(pkg, 'src/gen')).map((f) => relative(join(pkg, 'src/gen'), f)).sort();
    assert.deepEqual(committed, fresh);
    for (const f of fresh) {
      assert.equal(readFileSync(join(pkg, 'src/gen', f), 'utf8'), readFileSync(join(out, 'gen', f), 'utf8'), `${f} differs from its .proto`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
