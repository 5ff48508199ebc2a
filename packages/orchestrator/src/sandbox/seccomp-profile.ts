// Seccomp profile for sandboxes, in OCI form. Default allow (a shell, compilers, language runtimes and
// package managers must all work), with errno for the calls that widen the kernel attack surface or
// escape the namespaces: new namespaces (a new user namespace would hand out CAP_SYS_ADMIN over fresh
// mount/net namespaces), mounts, keyrings, BPF, perf, modules, kexec, io_uring, clock setting.
// ptrace stays (debuggers and strace are normal sandbox work; the pid namespace bounds what it sees).

const EPERM = 1;
const ENOSYS = 38;

const DENIED = [
  'acct', 'add_key', 'bpf', 'clock_adjtime', 'clock_settime', 'create_module', 'delete_module',
  'finit_module', 'fsconfig', 'fsmount', 'fsopen', 'fspick', 'get_kernel_syms', 'init_module',
  'io_uring_enter', 'io_uring_register', 'io_uring_setup', 'ioperm', 'iopl', 'kexec_file_load',
  'kexec_load', 'keyctl', 'lookup_dcookie', 'mount', 'mount_setattr', 'move_mount', 'name_to_handle_at',
  'nfsservctl', 'open_by_handle_at', 'open_tree', 'perf_event_open', 'pivot_root', 'query_module',
  'quotactl', 'quotactl_fd', 'reboot', 'request_key', 'setns', 'settimeofday', 'stime', 'swapoff',
  'swapon', 'syslog', 'umount', 'umount2', 'unshare', 'uselib', 'userfaultfd', 'vm86', 'vm86old',
];

/** clone(2) flags that create namespaces. */
const CLONE_NS_FLAGS = [
  0x00020000, // CLONE_NEWNS
  0x02000000, // CLONE_NEWCGROUP
  0x04000000, // CLONE_NEWUTS
  0x08000000, // CLONE_NEWIPC
  0x10000000, // CLONE_NEWUSER
  0x20000000, // CLONE_NEWPID
  0x40000000, // CLONE_NEWNET
];

export interface OciSeccomp {
  defaultAction: string;
  architectures: string[];
  syscalls: Array<{
    names: string[];
    action: string;
    errnoRet?: number;
    args?: Array<{ index: number; value: number; valueTwo: number; op: string }>;
  }>;
}

export function sandboxSeccompProfile(): OciSeccomp {
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32', 'SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
    syscalls: [
      { names: DENIED, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      // With default-allow, "any namespace bit set" needs one masked-equal rule per flag (rules OR).
      ...CLONE_NS_FLAGS.map((flag) => ({
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
      })),
      // clone3 passes flags in memory seccomp cannot read; ENOSYS makes glibc fall back to clone(2).
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    ],
  };
}
