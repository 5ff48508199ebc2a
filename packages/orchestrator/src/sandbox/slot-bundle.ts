// A slot's OCI bundle: the spec crun runs (and a restore takes its bind sources from), with the slot's cgroup
// limits, its lent files and the environment envd starts with.

import { createHash } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CgroupLimits } from './cgroups.js';
import { SANDBOX_PATH } from './crun-cli.js';
import { ENVD_ARGS, nofileLimit } from './first-process.js';
import type { LentBinaries } from './lent-files.js';
import { buildOciSpec } from './oci-spec.js';
import type { VolumeBind } from './slot-volumes.js';
import type { SlotLimits } from './runtime.js';
import { ENVD_PORT, ENVD_RUNTIME_ENV } from '@cove/contracts/sandbox';

const CPU_PERIOD_US = 100_000;

export function cgroupLimitsOf(l: SlotLimits, pids: number): CgroupLimits {
  return {
    memoryBytes: Math.max(16, l.memoryMb) * 1024 * 1024,
    cpuQuotaUs: Math.max(1000, Math.round(l.vcpu * CPU_PERIOD_US)),
    cpuPeriodUs: CPU_PERIOD_US,
    pids,
  };
}

export interface SlotBundleInput {
  slotId: string;
  slotDir: string;
  rootfs: string;
  initToken: string;
  diskMb: number;
  /** The first process under tini; default envd. */
  process?: string[];
  cgroupsPath: string;
  limits: CgroupLimits;
  idOffset: number;
  idCount: number;
  binaries: LentBinaries;
  envdDir: string | null;
  /** The code-interpreter guest install and where it appears inside; null for other stacks. */
  guestDir: { source: string; mount: string } | null;
  /** Team volumes mounted under the slot dir, bound at their destinations (slot-volumes.ts). */
  volumes?: VolumeBind[];
}

/**
 * The slot's boot_id, a random-looking UUID (v4 layout) derived from its envd init secret: a new boot gets a
 * new secret and so a new id, and a memory snapshot carries its secret (the dumped envd holds it) to whichever
 * node restores it, which derives the same id again, as a memory resume on E2B keeps its boot. One-way: the id
 * tells nothing about the secret.
 */
export function bootIdOf(initToken: string): string {
  const b = createHash('sha256').update('cove boot_id\0').update(initToken).digest().subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Writes `<slotDir>/bundle/config.json` (and the boot_id it binds); returns the bundle dir and the spec. */
export async function writeSlotBundle(i: SlotBundleInput): Promise<{ bundle: string; spec: Record<string, unknown> }> {
  // PID 1 is tini: node does not reap orphans, so without it every process a sandbox user leaves
  // behind would end as a zombie holding a pid until pids.max is reached.
  const args = ['/opt/cove/bin/tini', '--', ...(i.process ?? ENVD_ARGS)];
  const bundle = join(i.slotDir, 'bundle');
  await mkdir(bundle, { recursive: true, mode: 0o700 });
  // In the host-owned slot dir (0711), never in the rootfs: the sandbox cannot reach or replace it. Not in the
  // 0700 bundle dir: CRIU opens a restore's bind sources from inside the sandbox's user namespace, where host
  // root is unmapped and only world-traversable dirs pass. Written fresh (rm, then O_EXCL) so nothing stale
  // survives.
  const bootIdFile = join(i.slotDir, 'boot_id');
  await rm(bootIdFile, { force: true });
  await writeFile(bootIdFile, `${bootIdOf(i.initToken)}\n`, { mode: 0o444, flag: 'wx' });
  const spec = buildOciSpec({
    slotId: i.slotId,
    rootfs: i.rootfs,
    args,
    env: {
      PATH: SANDBOX_PATH,
      HOME: '/root',
      ENVD_PORT: String(ENVD_PORT),
      ...ENVD_RUNTIME_ENV,
      // An upload bigger than the whole writable disk can never succeed: envd refuses it up front (413).
      ENVD_MAX_UPLOAD_BYTES: String(i.diskMb * 1024 * 1024),
      COVE_ENVD_INIT_TOKEN: i.initToken,
    },
    cgroupsPath: i.cgroupsPath,
    idOffset: i.idOffset,
    idCount: i.idCount,
    memoryBytes: i.limits.memoryBytes,
    cpuQuotaUs: i.limits.cpuQuotaUs,
    cpuPeriodUs: i.limits.cpuPeriodUs,
    pids: i.limits.pids,
    nodeBinary: i.binaries.node,
    initBinary: i.binaries.init,
    envdDir: i.envdDir,
    guestDir: i.guestDir,
    volumes: i.volumes ?? [],
    nofile: await nofileLimit(),
    bootIdFile,
  });
  await writeFile(join(bundle, 'config.json'), JSON.stringify(spec));
  return { bundle, spec };
}
