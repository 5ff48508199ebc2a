// Builds dist/guest: the self-contained, read-only directory mounted at /opt/cove/code-interpreter
// in code-interpreter-v1 sandboxes. It holds the Python server and kernels (guest/, copied as
// they are) and the JS/TS evaluator with sucrase and acorn bundled into one file.
import { build } from 'esbuild';
import { chmod, cp, mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(pkgDir, 'dist', 'guest');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await cp(join(pkgDir, 'guest'), out, { recursive: true, filter: (p) => !/__pycache__|\.pyc$/.test(p) });
await build({
  entryPoints: [join(pkgDir, 'src', 'evaluator', 'main.ts')],
  outfile: join(out, 'js', 'evaluator.cjs'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
await chmod(join(out, 'start'), 0o755);
const listing = await readdir(out, { recursive: true });
process.stdout.write(`code-interpreter guest -> ${out} (${listing.length} entries)\n`);
