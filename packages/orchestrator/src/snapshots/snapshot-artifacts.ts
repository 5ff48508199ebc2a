// Moving a snapshot's two artifacts between a node and cluster storage (content-addressed, verified): the
// upper-dir layer tar as a file, the CRIU image dir as a plain tar streamed in and out (no temp copy).

import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, rm, statfs } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { BlobNotFound, downloadVerified, FILE_CHUNK_BYTES, HashMismatch, putArtifact, SizeMismatch, type BlobStore } from '@cove/storage';
import { NodeDiskFull, SnapshotCorrupt } from '../errors.js';

export interface ArtifactRef {
  sha256: string;
  size: number;
}

export async function storeFile(store: BlobStore, file: string): Promise<ArtifactRef> {
  const put = await putArtifact(store, createReadStream(file, { highWaterMark: FILE_CHUNK_BYTES }));
  return { sha256: put.sha256, size: put.size };
}

function tar(args: string[]): { child: ReturnType<typeof spawn>; exited: Promise<number | null>; stderr: () => string } {
  const child = spawn('tar', args, { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' } });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    if (err.length < 4096) err += c;
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  return { child, exited, stderr: () => err };
}

/** Streams `dir` as a tar into storage. */
export async function storeDirTar(store: BlobStore, dir: string): Promise<ArtifactRef> {
  const t = tar(['-c', '-f', '-', '-C', dir, '--numeric-owner', '.']);
  t.child.stdin!.end();
  const put = putArtifact(store, t.child.stdout as Readable);
  const [code, stored] = await Promise.all([t.exited, put.catch((e: unknown) => e as Error)]);
  if (stored instanceof Error) throw stored;
  if (code !== 0) throw new Error(`tar -c ${dir} exited ${code}: ${t.stderr().trim()}`);
  return { sha256: stored.sha256, size: stored.size };
}

/** Downloads the artifact to `dest`, verified against the (authenticated) manifest's sha256 and size. */
export async function fetchToFile(store: BlobStore, ref: ArtifactRef, dest: string, snapshotId: string): Promise<void> {
  try {
    await downloadVerified(store, ref.sha256, dest, { size: ref.size });
  } catch (err) {
    if (err instanceof BlobNotFound) throw new SnapshotCorrupt(snapshotId, `artifact ${ref.sha256} is missing from cluster storage`);
    if (err instanceof SizeMismatch || err instanceof HashMismatch) throw new SnapshotCorrupt(snapshotId, `artifact ${ref.sha256} does not match its manifest (${err.message})`);
    throw err;
  }
}

/** Unpacks a tar artifact into `dir` (created): fetched and verified into `spool` first, never unpacked unverified. */
export async function fetchTarToDir(store: BlobStore, ref: ArtifactRef, dir: string, spool: string, snapshotId: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o711 });
  try {
    await fetchToFile(store, ref, spool, snapshotId);
    // The tar matched its manifest, so an unpack that fails for want of room is this node's, not a corrupt snapshot.
    const free = await statfs(dir);
    if (free.bavail * free.bsize < ref.size) throw new NodeDiskFull(`snapshot ${snapshotId}'s images (${ref.size} bytes)`);
    const t = tar(['-x', '-f', spool, '-C', dir, '--numeric-owner', '-p']);
    t.child.stdin!.end();
    t.child.stdout!.resume();
    const code = await t.exited;
    if (code !== 0) throw new SnapshotCorrupt(snapshotId, `its image tar does not unpack: ${t.stderr().trim().slice(0, 300)}`);
  } finally {
    await rm(spool, { force: true });
  }
}
