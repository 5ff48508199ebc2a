// Builds the web app the control plane serves under /dashboard: src/main.ts bundled to one app.js (no
// framework, no run-time dependency), plus the static index.html and style.css, into dist/web.
import { build } from 'esbuild';
import { cp, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(pkgDir, 'dist', 'web');
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(pkgDir, 'src', 'main.ts')],
  outfile: join(out, 'app.js'),
  bundle: true,
  platform: 'browser',
  target: 'es2022',
  format: 'esm',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
for (const f of ['index.html', 'style.css']) await cp(join(pkgDir, 'static', f), join(out, f));
process.stdout.write(`dashboard bundle -> ${out}\n`);
