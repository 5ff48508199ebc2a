// Builds the self-contained envd directory the orchestrator bind-mounts read-only at
// /opt/cove/envd: envd.cjs (every JS dependency bundled), its launcher envd-start.cjs, the helper every command
// starts through (envd-exec, native/envd-exec.c), the one a slot starts envd's node through (envd-boot,
// native/envd-boot.c), and the two native addons, which are loaded lazily at run time and so stay outside the bundle.
// CommonJS, not ESM: Node's ESM loader keeps ~0.45 MiB in every idle envd (docs/decisions.md, envd as CommonJS).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, rm, writeFile, readFile, readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ENVD_BOOT, ENVD_ENTRY, ENVD_EXEC, ENVD_START } from '@cove/contracts/sandbox';

const pkgDir = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(pkgDir, 'dist', 'bundle');
const require = createRequire(join(pkgDir, 'package.json'));

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

// fs-xattr is an ES module that envd imports on first use; that import() would be the bundle's only dynamic import,
// and a script V8 compiled from its code cache has no dynamic-import callback (Node 20: "A dynamic import callback
// was not specified"). So it is bundled (esbuild keeps it lazy), and only its addon stays a file, where its
// createRequire(import.meta.url) looks for it.
const fsXattrAddonPath = {
  name: 'fs-xattr-addon-path',
  setup(b) {
    b.onLoad({ filter: /[\\/]fs-xattr[\\/]index\.js$/ }, async (args) => ({
      contents: (await readFile(args.path, 'utf8')).replaceAll(
        'import.meta.url',
        "require('node:url').pathToFileURL(require('node:path').join(__dirname, 'node_modules', 'fs-xattr', 'index.js')).href",
      ),
      loader: 'js',
    }));
  },
};

/**
 * A plugin that resolves a bare require of a Node built-in to `contents`: a stand-in that loads the real module
 * (`node:<name>`, which the plugin does not match) only when it is used. The build checks below refuse any other
 * require of the module, so a dependency that requires it some other way fails the build.
 */
function standIn(name, contents) {
  const namespace = `lazy-${name}`;
  return {
    name: namespace,
    setup(b) {
      b.onResolve({ filter: new RegExp(`^${name}$`) }, () => ({ path: namespace, namespace }));
      b.onLoad({ filter: /.*/, namespace }, () => ({ contents, loader: 'js' }));
    },
  };
}

const standIns = {
  // node:assert costs ~14 ms of every envd start (it builds the process's stderr stream for its colours), and only
  // pino's sonic-boom and thread-stream require it, at their top level, for checks on paths envd does not take at
  // start. The stand-in loads node:assert on its first call (docs/performance.md).
  assert: "let real; module.exports = function assert(value, message) { real ??= require('node:assert'); return real(value, message); };",
  // worker_threads costs ~15 ms of every envd start (it loads Node's worker internals), and only pino requires it,
  // at its top level: `isMainThread` (envd's bundle only ever runs as a process's main thread) and thread-stream's
  // `Worker` (only for pino transports, which envd does not use). The stand-in loads the real module if a Worker is
  // made.
  worker_threads:
    "module.exports = { isMainThread: true, Worker: function Worker(...args) { return new (require('node:worker_threads').Worker)(...args); } };",
};

/** What both files share: one CommonJS file each, every JS dependency inside, minified. */
const common = { bundle: true, platform: 'node', target: 'node20', format: 'cjs', minify: true, sourcemap: false, legalComments: 'none', logLevel: 'warning' };

await build({
  ...common,
  entryPoints: [join(pkgDir, 'src', 'main.ts')],
  outfile: join(out, ENVD_ENTRY),
  external: ['node-pty'],
  plugins: [fsXattrAddonPath, ...Object.entries(standIns).map(([name, contents]) => standIn(name, contents))],
  // The sources are ESM (their tests run them so); the one import.meta.url (node-pty's createRequire) becomes
  // the bundle's own file URL.
  define: { 'import.meta.url': '__envdFileUrl' },
  banner: { js: "'use strict'; const __envdFileUrl = require('node:url').pathToFileURL(__filename).href;" },
});

// The launcher runs the bundle without a dynamic-import callback (see fsXattrAddonPath): an import() left in it would
// fail at run time, so it fails the build.
const bundled = await readFile(join(out, ENVD_ENTRY), 'utf8');
if (/\bimport\(/.test(bundled)) throw new Error(`${ENVD_ENTRY} contains an import(): bundle that module`);
// And each stand-in's module only through its stand-in: its one require is the only one left.
for (const name of Object.keys(standIns)) {
  if (bundled.match(new RegExp(`require\\(["'](node:)?${name}["']\\)`, 'g'))?.length !== 1) {
    throw new Error(`${ENVD_ENTRY} requires ${name} other than through lazy-${name}: route it there`);
  }
}

// The helper every command starts through (native/envd-exec.c): static, as it runs in whatever a template holds. On
// x86-64 without libc, which keeps its cost per command at ~0.05 ms (docs/decisions.md).
const freestanding = process.arch === 'x64' ? ['-nostdlib', '-ffreestanding', '-fno-builtin', '-fno-stack-protector'] : [];
execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-static', ...freestanding, '-o', join(out, ENVD_EXEC), join(pkgDir, 'native', 'envd-exec.c')], {
  stdio: 'inherit',
});

// The helper a slot starts envd's node through (native/envd-boot.c), with the mmap-hints library (native/mmap-hints.c)
// built into it: the library is never a file of the bundle (envd-boot.c says why), so it is built beside it.
const nativeBuild = join(pkgDir, 'dist', 'native-build');
await mkdir(nativeBuild, { recursive: true });
// Stripped, in two pages: every envd keeps its own copy in memory.
execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-s', '-Wl,-z,noseparate-code', '-o', join(nativeBuild, 'mmap-hints.so'), join(pkgDir, 'native', 'mmap-hints.c')], {
  stdio: 'inherit',
});
execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-static', ...freestanding, `-Wa,-I,${nativeBuild}`, '-o', join(out, ENVD_BOOT), join(pkgDir, 'native', 'envd-boot.c')], {
  stdio: 'inherit',
});

// The launcher (src/start.ts) on its own: it loads ENVD_ENTRY through V8's code cache, so it must not contain it. Nor
// any package: every envd start compiles and runs the launcher without a cache, before envd (zod, through a
// contracts module, cost ~3 ms of CPU a start).
const launcher = await build({ ...common, entryPoints: [join(pkgDir, 'src', 'start.ts')], outfile: join(out, ENVD_START), metafile: true });
const launcherPackages = Object.keys(launcher.metafile.inputs).filter((p) => /(^|[\\/])node_modules[\\/]/.test(p));
if (launcherPackages.length > 0) throw new Error(`envd's launcher must bundle no package, it bundles: ${launcherPackages.join(', ')}`);

/** Copies a package's run-time files only. */
async function copyAddon(name, files) {
  // Not require.resolve(name/package.json): fs-xattr's exports map hides it.
  const base = require.resolve.paths(name).find((d) => existsSync(join(d, name, 'package.json')));
  if (!base) throw new Error(`${name} is not installed`);
  const src = join(base, name);
  const dst = join(out, 'node_modules', name);
  for (const f of files) {
    await mkdir(dirname(join(dst, f)), { recursive: true });
    await cp(join(src, f), join(dst, f), {
      recursive: true,
      filter: (p) => !/\.(map|ts)$/.test(p) && !/\.test\.js$/.test(p) && !/(windows|conpty|winpty)/i.test(p),
    });
  }
}

await copyAddon('node-pty', ['package.json', 'lib', 'build/Release/pty.node', 'LICENSE']);
await copyAddon('fs-xattr', ['package.json', 'build/Release/xattr.node', 'LICENSE']);
await writeFile(join(out, 'package.json'), JSON.stringify({ name: 'cove-envd-bundle', private: true, type: 'commonjs' }, null, 2) + '\n');

const { version } = JSON.parse(await readFile(join(pkgDir, 'package.json'), 'utf8'));
const listing = await readdir(out, { recursive: true });
process.stdout.write(`envd bundle ${version} -> ${out} (${listing.length} entries)\n`);
