// A slot's root filesystem: overlayfs with the template rootfs as the read-only lower layer and the
// upper/work dirs on a per-slot ext4 image of `diskMb` (sparse, loop-mounted), so a sandbox filling
// its disk gets ENOSPC and never the node's disk. Layout under the slot dir:
//   disk.ext4  the image;  disk/  its mount (upper/, work/);  rootfs/  the overlay crun runs.

import { chown, mkdir, open, readFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './run-command.js';

export interface SlotDiskPaths {
  slotDir: string;
  image: string;
  diskMount: string;
  rootfs: string;
}

export function slotDiskPaths(slotDir: string): SlotDiskPaths {
  return { slotDir, image: join(slotDir, 'disk.ext4'), diskMount: join(slotDir, 'disk'), rootfs: join(slotDir, 'rootfs') };
}

/** Creates the image, attaches a loop device, mounts it and the overlay. Returns the loop device. */
export async function createSlotDisk(
  p: SlotDiskPaths,
  lowerdir: string,
  diskMb: number,
  rootId: number,
): Promise<string> {
  const fh = await open(p.image, 'wx', 0o600);
  try {
    await fh.truncate(diskMb * 1024 * 1024);
  } finally {
    await fh.close();
  }
  // -m 0: no blocks reserved for "root" (overlay copy-up writes with the mounter's host-root creds,
  // which would otherwise get 5% more than the sandbox sees); no journal on a throwaway disk.
  await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-O', '^has_journal', '-E', 'nodiscard,lazy_itable_init=1', p.image]);
  // direct I/O: the image's pages are not cached a second time in the host page cache (charged to
  // no sandbox); the sandbox's own ext4 page cache is charged to its memory cgroup.
  const loop = (await run('losetup', ['--find', '--show', '--direct-io=on', p.image])).stdout.trim();
  await mkdir(p.diskMount, { recursive: true });
  await run('mount', ['-t', 'ext4', '-o', 'nosuid,nodev', loop, p.diskMount]);
  const upper = join(p.diskMount, 'upper');
  await mkdir(upper, { mode: 0o755 });
  await mkdir(join(p.diskMount, 'work'), { mode: 0o700 });
  // The overlay root takes the upper dir's owner: root inside (host rootId) must own `/`.
  await chown(upper, rootId, rootId);
  await mkdir(p.rootfs, { recursive: true });
  await run('mount', [
    '-t', 'overlay', 'overlay',
    '-o', `lowerdir=${lowerdir},upperdir=${upper},workdir=${join(p.diskMount, 'work')}`,
    p.rootfs,
  ]);
  return loop;
}

async function mountedAt(path: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === path);
}

/** Unmounts everything under the slot dir (overlay, disk, sysfs) and detaches the image's loop devices; idempotent. */
export async function removeSlotDisk(p: SlotDiskPaths): Promise<void> {
  for (const m of [...(await mountsUnder(p.slotDir)), p.rootfs, p.diskMount]) {
    while (await mountedAt(m)) {
      const r = await run('umount', [m], { allowFailure: true });
      if (r.code !== 0) await run('umount', ['-l', m]);
    }
  }
  const attached = await run('losetup', ['-j', p.image, '-O', 'NAME', '-n'], { allowFailure: true });
  for (const dev of attached.stdout.split('\n').map((s) => s.trim()).filter(Boolean)) {
    await run('losetup', ['-d', dev], { allowFailure: true });
  }
}

/** Bytes used on the slot's disk (what the sandbox wrote, plus ext4 metadata). */
export async function diskUsedBytes(p: SlotDiskPaths): Promise<number> {
  const s = await statfs(p.diskMount);
  return (s.blocks - s.bfree) * s.bsize;
}

/** Every mount point under a directory (orphan cleanup), deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return info
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}
