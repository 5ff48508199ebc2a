// A slot's root filesystem: overlayfs with the template rootfs (or a stack of layers) as the read-only lower layers and the
// upper/work dirs on a per-slot ext4 image of `diskMb` (sparse, loop-mounted), so a sandbox filling
// its disk gets ENOSPC and never the node's disk. Layout under the slot dir:
//   disk.ext4  the image;  disk/  its mount (upper/, work/);  rootfs/  the overlay crun runs.

import { chown, mkdir, open, readFile, statfs } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { extractLayer } from './layer-export.js';
import { MountTable, unmountEach } from './mount-tree.js';
import { HOST_OP, run } from './run-command.js';
import { BadLayerStack } from './runtime-errors.js';

export interface SlotDiskPaths {
  slotDir: string;
  image: string;
  diskMount: string;
  rootfs: string;
}

export function slotDiskPaths(slotDir: string): SlotDiskPaths {
  return { slotDir, image: join(slotDir, 'disk.ext4'), diskMount: join(slotDir, 'disk'), rootfs: join(slotDir, 'rootfs') };
}

/** mount(2) copies its data argument into one page; the overlay options must fit, with its NUL. */
const MOUNT_DATA_MAX = 4095;

/**
 * The overlay's mount options and the directory to run mount in. Lower dirs are absolute unless that does not
 * fit into one page; then the dirs sharing the most common parent (the layer cache) are named relative to it
 * and mount runs there (the kernel resolves relative lower dirs against the mounting process's cwd).
 */
export function overlayOptions(lowers: readonly string[], upper: string, work: string): { options: string; cwd?: string } {
  if (lowers.length === 0) throw new BadLayerStack(0, 'no lower layer');
  for (const l of lowers) {
    // ':' separates layers, ',' options, '\\' escapes: none may appear in a path we hand the kernel.
    if (!l.startsWith('/') || /[:,\\\s]/.test(l)) throw new BadLayerStack(lowers.length, `unusable layer path ${JSON.stringify(l)}`);
  }
  const tail = `,upperdir=${upper},workdir=${work}`;
  const absolute = `lowerdir=${lowers.join(':')}${tail}`;
  if (absolute.length <= MOUNT_DATA_MAX) return { options: absolute };
  const counts = new Map<string, number>();
  for (const l of lowers) counts.set(dirname(l), (counts.get(dirname(l)) ?? 0) + 1);
  const cwd = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
  const relative = `lowerdir=${lowers.map((l) => (dirname(l) === cwd ? basename(l) : l)).join(':')}${tail}`;
  if (relative.length > MOUNT_DATA_MAX) {
    throw new BadLayerStack(lowers.length, `the overlay options need ${relative.length} bytes, at most ${MOUNT_DATA_MAX} fit`);
  }
  return { options: relative, cwd };
}

/**
 * Creates the image, attaches a loop device, mounts it and the overlay. Returns the loop device. `upperTar` (a
 * layer tar, e.g. a snapshot's filesystem diff) is unpacked into the upper dir before the overlay is mounted
 * (writing below a mounted overlay is undefined).
 */
export async function createSlotDisk(
  p: SlotDiskPaths,
  lowers: readonly string[],
  diskMb: number,
  rootId: number,
  upperTar?: string,
): Promise<string> {
  const work = join(p.diskMount, 'work');
  const upper = join(p.diskMount, 'upper');
  // Checked before anything is made, so a stack that cannot be mounted fails without side effects.
  const overlay = overlayOptions(lowers, upper, work);
  const fh = await open(p.image, 'wx', 0o600);
  try {
    await fh.truncate(diskMb * 1024 * 1024);
  } finally {
    await fh.close();
  }
  // -m 0: no blocks reserved for "root" (overlay copy-up writes with the mounter's host-root creds,
  // which would otherwise get 5% more than the sandbox sees); no journal on a throwaway disk.
  await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-O', '^has_journal', '-E', 'nodiscard,lazy_itable_init=1', p.image]);
  // On a loop device with direct I/O (the image's pages are not cached a second time in the host page cache,
  // charged to no sandbox; the sandbox's own ext4 page cache is charged to its memory cgroup) and autoclear (it
  // detaches itself when the disk is unmounted, so nothing scans the node's loop devices at the end).
  await mkdir(p.diskMount, { recursive: true });
  const loop = (await run(HOST_OP.mountLoop, [p.image, p.diskMount])).stdout.trim();
  await mkdir(upper, { mode: 0o755 });
  await mkdir(work, { mode: 0o700 });
  // The overlay root takes the upper dir's owner: root inside (host rootId) must own `/`.
  await chown(upper, rootId, rootId);
  // As root: owners (already shifted), whiteouts and opaque dirs come out as stored (see extractLayer).
  if (upperTar) await extractLayer(upperTar, upper);
  await mkdir(p.rootfs, { recursive: true });
  await run(HOST_OP.mount, ['overlay', 'overlay', p.rootfs, '', overlay.options], overlay.cwd ? { cwd: overlay.cwd } : {});
  return loop;
}

/**
 * Unmounts everything under the slot dir (overlay, disk, sysfs) and detaches the image's loop devices; idempotent.
 * A disk mounted by HOST_OP.mountLoop detaches itself; one attached without autoclear (a slot from before it) is
 * detached here, and an image not mounted at all (a start that failed midway) is looked up among all loop devices.
 */
export async function removeSlotDisk(p: SlotDiskPaths): Promise<void> {
  const table = await MountTable.read();
  const device = table.sourceOf(p.diskMount);
  const loop = device && /^\/dev\/loop\d+$/.test(device) ? device : undefined;
  const autoclears = loop ? (await readFile(`/sys/block/${loop.slice(5)}/loop/autoclear`, 'utf8').catch(() => '0')).trim() === '1' : false;
  await unmountEach([...table.under(p.slotDir), p.rootfs, p.diskMount], table);
  if (autoclears) return;
  const attached = loop
    ? [loop]
    : (await run('losetup', ['-j', p.image, '-O', 'NAME', '-n'], { allowFailure: true })).stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  for (const dev of attached) await run('losetup', ['-d', dev], { allowFailure: true });
}

/** The slot's writable layer (overlay upper dir). */
export function upperDirOf(p: SlotDiskPaths): string {
  return join(p.diskMount, 'upper');
}

/** Bytes used on the slot's disk (what the sandbox wrote, plus ext4 metadata). */
export async function diskUsedBytes(p: SlotDiskPaths): Promise<number> {
  const s = await statfs(p.diskMount);
  return (s.blocks - s.bfree) * s.bsize;
}
