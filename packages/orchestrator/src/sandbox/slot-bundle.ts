// A slot's OCI bundle: the spec crun runs (and a restore takes its bind sources from), with the slot's cgroup
// limits, its lent files and the environment envd starts with.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CgroupLimits } from './cgroups.js';
import { SANDBOX_PATH } from './crun-cli.js';
import { ENVD_ARGS, nofileLimit } from './first-process.js';
import type { LentBinaries } from './lent-files.js';
import { buildOciSpec } from './oci-spec.js';
import type { SlotLimits } from './runtime.js';
import { ENVD_PORT } from '@cove/contracts/sandbox';

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
}

/** Writes `<slotDir>/bundle/config.json`; returns the bundle dir and the spec. */
export async function writeSlotBundle(i: SlotBundleInput): Promise<{ bundle: string; spec: Record<string, unknown> }> {
  // PID 1 is tini: node does not reap orphans, so without it every process a sandbox user leaves
  // behind would end as a zombie holding a pid until pids.max is reached.
  const args = ['/opt/cove/bin/tini', '--', ...(i.process ?? ENVD_ARGS)];
  const spec = buildOciSpec({
    slotId: i.slotId,
    rootfs: i.rootfs,
    args,
    env: {
      PATH: SANDBOX_PATH,
      HOME: '/root',
      ENVD_PORT: String(ENVD_PORT),
      UV_THREADPOOL_SIZE: '2',
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
    nofile: await nofileLimit(),
  });
  const bundle = join(i.slotDir, 'bundle');
  await mkdir(bundle, { recursive: true, mode: 0o700 });
  await writeFile(join(bundle, 'config.json'), JSON.stringify(spec));
  return { bundle, spec };
}
