// Generates the OCI config.json crun runs a slot from. The rootfs is an overlay the runtime mounted on
// the host; everything else, the netns included, is created by crun (the host plumbs the netns).

import { sandboxSysctls } from './kernel-budgets.js';
import { sandboxSeccompProfile } from './seccomp-profile.js';
import { ENVD_MOUNT } from '@cove/contracts/sandbox';

/** Docker's default set minus NET_RAW (no forged packets from a sandbox) and MKNOD (useless in a userns). */
export const SANDBOX_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP',
  'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

export interface OciSpecInput {
  slotId: string;
  rootfs: string;
  args: string[];
  env: Record<string, string>;
  cgroupsPath: string;
  idOffset: number;
  idCount: number;
  memoryBytes: number;
  cpuQuotaUs: number;
  cpuPeriodUs: number;
  pids: number;
  /** Host path of the node binary bound at /opt/cove/bin/node. */
  nodeBinary: string;
  /** Host path of the static init bound at /opt/cove/bin/tini. */
  initBinary: string;
  /** Host directory bound at /opt/cove/envd (may be absent when a stand-in process is used). */
  envdDir: string | null;
  /** Host directory bound read-only at `guestDir.mount` (the code-interpreter guest install), or null. */
  guestDir: { source: string; mount: string } | null;
  /** RLIMIT_NOFILE inside; at most the orchestrator's own hard limit (crun cannot raise it in a userns). */
  nofile: number;
  /** Host file (outside the tenant tree) bound read-only over /proc/sys/kernel/random/boot_id, or null. */
  bootIdFile: string | null;
  /** Team volumes (host mounts under the slot dir) and where they appear inside. */
  volumes?: Array<{ source: string; destination: string }>;
}

/** Where Linux tells a process which boot it runs in; E2B's differs per sandbox boot. */
export const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';

const dev = (name: string) => ({
  destination: `/dev/${name}`,
  type: 'bind',
  source: `/dev/${name}`,
  options: ['bind', 'nosuid', 'noexec'],
});

export function buildOciSpec(i: OciSpecInput): Record<string, unknown> {
  const mapping = [{ containerID: 0, hostID: i.idOffset, size: i.idCount }];
  const mounts: Array<Record<string, unknown>> = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    ...['null', 'zero', 'full', 'random', 'urandom', 'tty'].map(dev),
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    // crun may mount sysfs because the sandbox's userns owns its netns: it lists only the sandbox's own
    // interfaces, and no host path is bound (CRIU can dump and restore it).
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['ro', 'nosuid', 'noexec', 'nodev'] },
    { destination: '/opt/cove/bin/node', type: 'bind', source: i.nodeBinary, options: ['bind', 'ro', 'nosuid', 'nodev'] },
    { destination: '/opt/cove/bin/tini', type: 'bind', source: i.initBinary, options: ['bind', 'ro', 'nosuid', 'nodev'] },
  ];
  if (i.envdDir) {
    mounts.push({ destination: ENVD_MOUNT, type: 'bind', source: i.envdDir, options: ['rbind', 'ro', 'nosuid', 'nodev'] });
  }
  if (i.bootIdFile) {
    // After /proc (mounts apply in order); a bind from the spec, so CRIU treats it as external and a restore
    // rebinds this node's own file (criu.ts).
    mounts.push({ destination: BOOT_ID_PATH, type: 'bind', source: i.bootIdFile, options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'] });
  }
  if (i.guestDir) {
    mounts.push({ destination: i.guestDir.mount, type: 'bind', source: i.guestDir.source, options: ['rbind', 'ro', 'nosuid', 'nodev'] });
  }
  // Last, so nothing above lands inside a volume. crun resolves each destination inside the rootfs (a link
  // planted on the way stays in the sandbox's root); nosuid,nodev as the host mount itself.
  for (const v of i.volumes ?? []) mounts.push({ destination: v.destination, type: 'bind', source: v.source, options: ['bind', 'nosuid', 'nodev'] });
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: i.args,
      env: Object.entries(i.env).map(([k, v]) => `${k}=${v}`),
      cwd: '/',
      capabilities: {
        bounding: SANDBOX_CAPABILITIES,
        effective: SANDBOX_CAPABILITIES,
        permitted: SANDBOX_CAPABILITIES,
        inheritable: [],
        ambient: [],
      },
      rlimits: [
        { type: 'RLIMIT_NOFILE', hard: i.nofile, soft: i.nofile },
        { type: 'RLIMIT_CORE', hard: 0, soft: 0 },
        // Not RLIMIT_SIGPENDING/MSGQUEUE: the host sets those after start (kernel-budgets.ts says why).
      ],
      // Never below 0 (the host sets the floor again after start: linux-runtime.ts bringUp).
      oomScoreAdj: 0,
      // sudo is setuid: no_new_privs would make it useless.
      noNewPrivileges: false,
    },
    root: { path: i.rootfs, readonly: false },
    hostname: i.slotId,
    mounts,
    linux: {
      uidMappings: mapping,
      gidMappings: mapping,
      namespaces: [
        { type: 'pid' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        { type: 'cgroup' },
        { type: 'user' },
        // A new netns owned by the sandbox's userns (CRIU refuses a host-made one); the host plumbs it
        // between `crun create` and `crun start` (slot-network.ts).
        { type: 'network' },
      ],
      // Written by crun inside the sandbox's own user and IPC namespaces (read-only to the sandbox after).
      sysctl: sandboxSysctls(),
      cgroupsPath: i.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        // swap == limit: no swap (memsw on v1, memory.swap.max 0 on v2). No swappiness: cgroup v2 has none.
        memory: { limit: i.memoryBytes, swap: i.memoryBytes },
        cpu: { quota: i.cpuQuotaUs, period: i.cpuPeriodUs },
        pids: { limit: i.pids },
      },
      // crun masks directories with a read-only tmpfs and files with /dev/null: no host paths, so
      // CRIU can later checkpoint the sandbox.
      maskedPaths: [
        '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
        '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      seccomp: sandboxSeccompProfile(),
    },
  };
}
