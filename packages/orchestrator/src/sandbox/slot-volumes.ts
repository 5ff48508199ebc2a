// Team volumes in a slot (docs/volumes.md). A volume is an ext4 image `<volumesDir>/<volumeId>.ext4` in the
// cluster's shared volume directory (every node mounts the same one: a local dir on one machine, NFS/EFS across
// machines). Its size is its quota: a sandbox filling it gets ENOSPC, never the shared disk. The control plane
// attaches a volume to one running sandbox at a time, so one kernel mounts an image at once (ext4 is not a
// cluster filesystem).
//
// The host only ever names host-made paths: the image (from a validated UUID), and the mount point under the
// slot dir (host-owned, outside the rootfs). The tenant's content is reached only through the kernel's ext4
// driver inside the sandbox; the mount is nosuid,nodev so nothing planted in it gains privilege, and links in it
// resolve inside the sandbox's own root. crun binds the mount at its destination inside the rootfs.

import { link, mkdir, open, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { run } from './run-command.js';

export interface VolumeMountSpec {
  volumeId: string;
  /** Absolute path inside the sandbox. */
  path: string;
  quotaBytes: number;
}

/** A volume mounted on the host, for the OCI spec to bind. */
export interface VolumeBind {
  source: string;
  destination: string;
}

export const VOLUME_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const MIN_VOLUME_QUOTA_BYTES = 16 * 1024 * 1024;
export const MAX_VOLUME_QUOTA_BYTES = 1024 * 1024 * 1024 * 1024;
export const MAX_VOLUME_MOUNTS = 8;
/** Host uid/gid of id 0 inside every sandbox (the runtime's default offset); a volume's files are stored shifted. */
export const DEFAULT_ID_OFFSET = 100_000;
/** Where a volume may not go: the sandbox's own kernel and Cove's lent files. */
const RESERVED = ['/proc', '/sys', '/dev', '/opt/cove'];

/** Problems with a spec's volume mounts (empty = fine), `volume_mounts[i].field: message` like validateSpec's. */
export function volumeMountProblems(mounts: readonly VolumeMountSpec[]): string[] {
  const v: string[] = [];
  if (mounts.length > MAX_VOLUME_MOUNTS) v.push(`volume_mounts: at most ${MAX_VOLUME_MOUNTS}`);
  const ids = new Set<string>();
  const paths = new Set<string>();
  mounts.forEach((m, i) => {
    const at = `volume_mounts[${i}]`;
    if (!VOLUME_ID_RE.test(m.volumeId)) v.push(`${at}.volume_id: must be a lowercase UUID`);
    else if (ids.has(m.volumeId)) v.push(`${at}.volume_id: mounted twice`);
    ids.add(m.volumeId);
    const p = m.path;
    if (
      typeof p !== 'string' ||
      !p.startsWith('/') ||
      p.length > 1024 ||
      posix.normalize(p) !== p ||
      p === '/' ||
      p.endsWith('/') ||
      // Characters crun and mount(8) would read as separators or escapes.
      /[\0-\x1f,:\\\s]/.test(p)
    ) {
      v.push(`${at}.path: must be an absolute, normalised path other than / without spaces, commas, colons or backslashes`);
    } else if (RESERVED.some((r) => p === r || p.startsWith(`${r}/`))) {
      v.push(`${at}.path: ${RESERVED.join(', ')} are reserved`);
    } else if ([...paths].some((q) => q === p || p.startsWith(`${q}/`) || q.startsWith(`${p}/`))) {
      v.push(`${at}.path: overlaps another mount`);
    }
    paths.add(p);
    if (!Number.isSafeInteger(m.quotaBytes) || m.quotaBytes < MIN_VOLUME_QUOTA_BYTES || m.quotaBytes > MAX_VOLUME_QUOTA_BYTES) {
      v.push(`${at}.quota_bytes: must be between ${MIN_VOLUME_QUOTA_BYTES} and ${MAX_VOLUME_QUOTA_BYTES}`);
    }
  });
  return v;
}

export function volumeImageOf(volumesDir: string, volumeId: string): string {
  if (!VOLUME_ID_RE.test(volumeId)) throw new Error(`not a volume id: ${JSON.stringify(volumeId)}`);
  return join(volumesDir, `${volumeId}.ext4`);
}

/**
 * Makes the volume's image on first use: sparse, `quotaBytes` long, ext4 with its root owned by the sandbox's
 * default user (host uid `userId`) so `user` can write without sudo. Created under a temporary name and linked
 * into place, so a crash never leaves a half-made image under the real name.
 */
export async function ensureVolumeImage(image: string, quotaBytes: number, userId: number): Promise<void> {
  const fresh = `${image}.${process.pid}.${Date.now()}.new`;
  let fh;
  try {
    fh = await open(image, 'r');
    await fh.close();
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const w = await open(fresh, 'wx', 0o600);
  try {
    await w.truncate(quotaBytes);
  } finally {
    await w.close();
  }
  try {
    await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', `nodiscard,lazy_itable_init=1,root_owner=${userId}:${userId}`, fresh]);
    // link(2) fails with EEXIST if another creator won: its image is the volume, ours is dropped.
    await link(fresh, image).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  } finally {
    await rm(fresh, { force: true });
  }
}

/**
 * Mounts each volume under `<slotDir>/volumes/<i>` (removeSlotDisk unmounts everything under the slot dir, and
 * the loop device clears itself on unmount) and returns the binds for the OCI spec.
 */
export async function attachVolumes(slotDir: string, volumesDir: string, mounts: readonly VolumeMountSpec[], userId: number): Promise<VolumeBind[]> {
  const problems = volumeMountProblems(mounts);
  if (problems.length > 0) throw new Error(`invalid volume mounts: ${problems.join('; ')}`);
  if (mounts.length === 0) return [];
  await mkdir(volumesDir, { recursive: true, mode: 0o700 });
  const binds: VolumeBind[] = [];
  for (const [i, m] of mounts.entries()) {
    const image = volumeImageOf(volumesDir, m.volumeId);
    await ensureVolumeImage(image, m.quotaBytes, userId);
    const at = join(slotDir, 'volumes', String(i));
    await mkdir(at, { recursive: true, mode: 0o755 });
    // A crash can leave the journal to replay; ext4 replays it on mount. nosuid,nodev: nothing planted inside
    // gains privilege.
    // Under the image's lock, which the content API's helper (native/volume-fs.c) holds while it has the image
    // mounted in its own namespace: on one machine the two never mount the same image at once.
    await run('flock', ['-w', '60', image, 'mount', '-t', 'ext4', '-o', 'loop,nosuid,nodev', image, at]);
    binds.push({ source: at, destination: m.path });
  }
  return binds;
}
