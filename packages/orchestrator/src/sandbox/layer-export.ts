// A slot's writable layer (overlay upper dir) → a layer tar (docs/template-builds.md "Layer format"): GNU tar,
// numeric owners (already shifted into the sandbox user namespace), whiteouts as the 0/0 character devices
// overlay made, opaque dirs via their trusted.overlay.opaque xattr. Left out: the files the runtime writes
// into every slot, and the mount points crun creates for what it mounts (empty stubs, and mounted over, so a
// sandbox can never have put anything into them); a stack without them gets them again from crun at boot.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { HashingStream } from '@cove/storage';
import type { Logger } from 'pino';
import { CommandFailed } from './runtime-errors.js';

/** Top-level entries never exported: mount points of /proc, /dev (tmpfs) and /sys. */
const EXCLUDED_TOP = new Set(['proc', 'dev', 'sys']);
/** Deeper paths never exported: the runtime's /etc files and crun's bind-mount targets. */
export const EXCLUDED_PATHS = [
  'etc/hostname', 'etc/hosts', 'etc/resolv.conf',
  'opt/cove/bin/node', 'opt/cove/bin/tini', 'opt/cove/envd', 'opt/cove/code-interpreter',
];

/** GNU tar flags shared by export and extraction (the layer format). */
export const LAYER_TAR_FLAGS = ['--numeric-owner', '--xattrs', '--xattrs-include=trusted.overlay.*'];

/**
 * Extraction of a layer (as host root, into a fresh directory): owners as stored (already shifted), and of the
 * overlay's xattrs only `opaque`, the one the layer format uses. A tar's other trusted.overlay.* (redirect,
 * metacopy, origin) would steer overlayfs lookups, and the tar's content is the tenant's. GNU tar itself
 * refuses absolute and `..` members and writes no member through a link the archive made (it places such
 * links last); tests/tenant-fs.test.ts holds it to that.
 */
const LAYER_EXTRACT_FLAGS = ['-x', '-p', '--same-owner', '--numeric-owner', '--xattrs', '--xattrs-include=trusted.overlay.opaque'];

/** A GNU tar process over the layer format: its first 4 KiB of stderr, and its exit. */
export interface LayerTar {
  child: ChildProcessWithoutNullStreams;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Spawns `tar <args> <LAYER_TAR_FLAGS>` with a fixed PATH and locale, all three streams piped. */
export function spawnLayerTar(args: string[]): LayerTar {
  return spawnTar([...args, ...LAYER_TAR_FLAGS]);
}

/** Extracts a layer tar file (already verified) into the fresh directory `dir`; see LAYER_EXTRACT_FLAGS. */
export async function extractLayer(tarFile: string, dir: string): Promise<void> {
  const { child, stderr, exited } = spawnTar([...LAYER_EXTRACT_FLAGS, '-f', tarFile, '-C', dir]);
  child.stdin.end();
  child.stdout.resume(); // tar -x writes nothing there; never let a pipe fill
  const code = await exited;
  if (code !== 0) throw new CommandFailed('tar -x (layer)', code, stderr());
}

function spawnTar(args: string[]): LayerTar {
  const child = spawn('tar', args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    if (stderr.length < 4096) stderr += c;
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  return { child, stderr: () => stderr, exited };
}

export async function exportLayer(upperDir: string, destFile: string, log: Logger): Promise<{ bytes: number; sha256: string }> {
  // Members are named relative to the upper dir without a `./` root entry: the upper root carries the overlay
  // instance's own xattrs (trusted.overlay.uuid), which must not travel into another stack.
  const top = (await readdir(upperDir)).filter((n) => !EXCLUDED_TOP.has(n)).sort();
  const { child, stderr, exited } = spawnLayerTar(
    [
      '-c', '-f', '-', '-C', upperDir,
      // Exact paths (no wildcards), matched from the member name's start; an excluded dir takes its contents.
      '--anchored', '--no-wildcards', ...EXCLUDED_PATHS.map((p) => `--exclude=${p}`),
      '--null', '-T', '-',
    ],
  );
  child.stdin.end(top.map((n) => `${n}\0`).join(''));
  const hash = new HashingStream();
  try {
    await pipeline(child.stdout, hash, createWriteStream(destFile, { mode: 0o600 }));
    const code = await exited;
    // 1 = a file changed while it was read (something still writes in the slot): the layer is still a
    // consistent tar, so keep it but say so; 2 = fatal.
    if (code === 1) log.warn({ stderr: stderr().trim() }, 'files changed while the layer was exported');
    else if (code !== 0) throw new CommandFailed('tar -c (layer export)', code, stderr());
  } catch (err) {
    child.kill('SIGKILL');
    await rm(destFile, { force: true });
    throw err;
  }
  return { bytes: hash.size, sha256: hash.digest() };
}
