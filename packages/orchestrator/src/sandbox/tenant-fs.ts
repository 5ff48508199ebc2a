// Files inside trees a sandbox controls (a slot's rootfs, a built layer), read and written through the
// native tenant-fs helper (native/tenant-fs.c): every lookup below the tree's root refuses links and mount
// crossings in the kernel (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS), so nothing a tenant planted can
// point host root at a host file. Node's own fs must never be given a path inside such a tree.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** dist/src/sandbox/tenant-fs.js → dist/native/tenant-fs (built by `npm run build:native`). */
const HELPER = fileURLToPath(new URL('../../native/tenant-fs', import.meta.url));

/** The helper's exit codes (see native/tenant-fs.c). */
const EXIT = { ok: 0, absent: 3, notPlain: 4, tooBig: 5 } as const;

export type TenantFsErrorCode = 'tenant_fs_absent' | 'tenant_fs_not_plain' | 'tenant_fs_too_big' | 'tenant_fs_failed';

export class TenantFsError extends Error {
  constructor(
    readonly code: TenantFsErrorCode,
    readonly path: string,
    detail: string,
  ) {
    super(`${path}: ${detail}`);
    this.name = 'TenantFsError';
  }
}

function codeOf(exit: number | null): TenantFsErrorCode {
  if (exit === EXIT.absent) return 'tenant_fs_absent';
  if (exit === EXIT.notPlain) return 'tenant_fs_not_plain';
  if (exit === EXIT.tooBig) return 'tenant_fs_too_big';
  return 'tenant_fs_failed';
}

function runHelper(args: string[], input: Buffer | null, path: string, maxOut: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(HELPER, args, { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      outBytes += c.length;
      // The helper stops at its own bound; this one only guards against a broken helper.
      if (outBytes <= maxOut) out.push(c);
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      if (err.length < 2048) err += c;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === EXIT.ok && outBytes <= maxOut) resolve(Buffer.concat(out));
      else reject(new TenantFsError(codeOf(code), path, err.trim() || `tenant-fs exited ${code}`));
    });
    child.stdin.on('error', () => undefined); // an early exit closes the pipe; the exit code says why
    child.stdin.end(input ?? undefined);
  });
}

export interface TenantFile {
  /** Relative to the tree's root, e.g. `etc/hostname`. */
  path: string;
  content: string | Buffer;
}

/**
 * Writes each file as a new inode renamed over its path (a link standing there is replaced, not followed),
 * owned by uid:gid with `mode`. A missing parent directly below the root is created.
 */
export async function writeTenantFiles(root: string, uid: number, gid: number, mode: number, files: TenantFile[]): Promise<void> {
  const bodies = files.map((f) => (typeof f.content === 'string' ? Buffer.from(f.content) : f.content));
  const args = ['put', root, String(uid), String(gid), mode.toString(8), ...files.map((f, i) => `${relative(f.path)}=${bodies[i]!.length}`)];
  await runHelper(args, Buffer.concat(bodies), files.map((f) => f.path).join(', '), 0);
}

/**
 * A regular file's bytes (at most `maxBytes`), looked up without following any link. TenantFsError with
 * `tenant_fs_absent` when nothing is there, `tenant_fs_not_plain` for a link, device, FIFO or directory on the way.
 */
export async function readTenantFile(root: string, path: string, maxBytes: number): Promise<Buffer> {
  return runHelper(['get', root, relative(path), String(maxBytes)], null, path, maxBytes);
}

function relative(path: string): string {
  const rel = path.replace(/^\/+/, '');
  if (rel === '' || rel.includes('\0') || rel.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new TenantFsError('tenant_fs_failed', path, 'not a plain relative path');
  }
  return rel;
}
