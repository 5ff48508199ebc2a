// envd as every slot bind-mounts it: an immutable, content-addressed copy of the envd bundle under
// `<dataDir>/envd/<sha256-prefix>/` (immutable-install.ts says why), never the build directory; with V8's code cache
// of envd's start made here, on the host, for the node binary slots run it with (docs/performance.md, "envd's code
// cache"). A sandbox only ever reads that cache; it can neither make nor change it.

import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { open, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ENVD_CODE_CACHE, ENVD_NODE_FLAGS, ENVD_START, ENVD_WRITE_CODE_CACHE_ENV } from '@cove/contracts/sandbox';
import { installImmutable, pruneInstalls } from './immutable-install.js';

/** The run that makes the cache must end within this, or the install goes on without one. */
const CODE_CACHE_TIMEOUT_MS = 20_000;
/** envd's cache is ~0.4 MiB; anything far larger is not one. */
const MAX_CODE_CACHE_BYTES = 16 << 20;
/** nobody/nogroup: the run needs nothing of root's. */
const NOBODY = 65534;

export function envdInstallRoot(dataDir: string): string {
  return join(dataDir, 'envd');
}

/**
 * Installs `bundleDir` (once per content and node binary) and returns the directory slots bind-mount. A cache that
 * could not be made (`onNoCodeCache` says why) leaves an install without one: envd then compiles itself as usual.
 */
export async function installEnvd(bundleDir: string, dataDir: string, nodeBinary: string, onNoCodeCache?: (reason: string) => void): Promise<string> {
  const node = await stat(nodeBinary);
  return installImmutable(bundleDir, envdInstallRoot(dataDir), 'envd bundle', '.cove-envd-complete', {
    // V8 takes a cache only from the same node build under the same flags: a new node gets a new install and cache.
    key: JSON.stringify({ node: [node.size, node.mtimeMs, node.ino], flags: ENVD_NODE_FLAGS }),
    finish: async (dir) => {
      const made = await makeCodeCache(nodeBinary, dir);
      if (typeof made === 'string') onNoCodeCache?.(made);
      else await writeFile(join(dir, ENVD_CODE_CACHE), made, { mode: 0o444 });
    },
  });
}

/** Runs the bundle's launcher in `dir` in its cache-making mode as nobody; the cache, or why there is none. */
export async function makeCodeCache(nodeBinary: string, dir: string): Promise<Buffer | string> {
  // nobody may not search the node's data dir (often 0700): it reaches the bundle through a descriptor of ours.
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    return await runCacheMaker(nodeBinary, handle.fd);
  } finally {
    await handle.close();
  }
}

function runCacheMaker(nodeBinary: string, dirFd: number): Promise<Buffer | string> {
  return new Promise((resolve) => {
    // --preserve-symlinks-main: Node would resolve /proc/self/fd/4 to the real path, and search the dirs nobody may not.
    const child = spawn(nodeBinary, [...ENVD_NODE_FLAGS, '--preserve-symlinks-main', `/proc/self/fd/4/${ENVD_START}`], {
      env: { PATH: '/usr/bin:/bin', [ENVD_WRITE_CODE_CACHE_ENV]: '1', ENVD_LOG_LEVEL: 'silent' },
      // fd 3: the cache out; fd 4: the bundle's directory.
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', dirFd],
      uid: NOBODY,
      gid: NOBODY,
      cwd: '/',
      timeout: CODE_CACHE_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = '';
    child.stdio[3]!.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_CODE_CACHE_BYTES) child.kill('SIGKILL');
      else chunks.push(d);
    });
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    child.on('error', (err) => resolve(`could not run ${nodeBinary}: ${err.message}`));
    child.on('close', (code, signal) => {
      if (code === 0 && size > 0 && size <= MAX_CODE_CACHE_BYTES) resolve(Buffer.concat(chunks));
      else resolve(`the cache run ended with ${signal ?? `exit ${code}`} after ${size} bytes: ${stderr.trim().slice(0, 300)}`);
    });
  });
}

/** Removes installs other than `keep` (the current one and every one a slot still mounts). */
export function pruneEnvdInstalls(dataDir: string, keep: ReadonlySet<string>): Promise<string[]> {
  return pruneInstalls(envdInstallRoot(dataDir), keep);
}
