// Seccomp profile for sandboxes, in OCI form. Default allow (a shell, compilers, language runtimes and
// package managers must all work), with errno for the calls that widen the kernel attack surface or
// escape the namespaces: new namespaces (a new user namespace would hand out CAP_SYS_ADMIN over fresh
// mount/net namespaces), mounts, keyrings, BPF, perf, modules, kexec, io_uring, clock setting.
// ptrace stays (debuggers and strace are normal sandbox work; the pid namespace bounds what it sees).
// Sockets only of the families sandboxes use (the others' kernel code, often a module loaded on first
// use, stays unreachable), and personality only with Docker's values (no READ_IMPLIES_EXEC etc.).

const EPERM = 1;
const ENOSYS = 38;
const EPROTONOSUPPORT = 93;
const EAFNOSUPPORT = 97;

/**
 * AF_UNIX 1, AF_INET 2, AF_INET6 10, AF_NETLINK 16. Not AF_PACKET 17: it needs CAP_NET_RAW, which
 * sandboxes lack, so only its code would be reachable. Everything above 16 (VSOCK, TIPC, RDS, ALG,
 * CAN, BLUETOOTH, XDP, ...) and the obsolete ones below it are refused with EAFNOSUPPORT.
 */
export const ALLOWED_SOCKET_FAMILIES = [1, 2, 10, 16];
const AF_NETLINK = 16;
/**
 * NETLINK_ROUTE 0 (ip, getifaddrs, getaddrinfo), NETLINK_SOCK_DIAG 4 (ss), NETLINK_KOBJECT_UEVENT 15
 * (libudev opens it), NETLINK_GENERIC 16 (ethtool, ip's genl commands). Not AUDIT 9 (sudo and PAM take
 * EPROTONOSUPPORT as "no audit"), XFRM, NETFILTER, CRYPTO, RDMA, ... (CAP_NET_ADMIN work anyway).
 */
export const ALLOWED_NETLINK_PROTOCOLS = [0, 4, 15, 16];
/** Docker's default profile: PER_LINUX, PER_LINUX32, UNAME26, both, and the 0xffffffff query. */
export const ALLOWED_PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

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

type Rule = OciSeccomp['syscalls'][number];
type Arg = NonNullable<Rule['args']>[number];

const arg = (index: number, op: string, value: number, valueTwo = 0): Arg => ({ index, value, valueTwo, op });

/**
 * Refuses `arg index` outside `allowed` (small non-negative values). A default-allow profile can only
 * deny, and crun ORs conditions on the same argument, so "not in the set" is one rule per refused
 * value below the largest allowed one plus a greater-than rule (which also catches values with high
 * bits set, since comparisons are unsigned 64-bit).
 */
function refuseOutside(name: string, index: number, allowed: number[], errnoRet: number, also: Arg[] = []): Rule[] {
  const max = Math.max(...allowed);
  const values = Array.from({ length: max }, (_, v) => v).filter((v) => !allowed.includes(v));
  return [
    ...values.map((v) => ({ names: [name], action: 'SCMP_ACT_ERRNO', errnoRet, args: [...also, arg(index, 'SCMP_CMP_EQ', v)] })),
    { names: [name], action: 'SCMP_ACT_ERRNO', errnoRet, args: [...also, arg(index, 'SCMP_CMP_GT', max)] },
  ];
}

/**
 * personality(2) only with ALLOWED_PERSONALITIES. Same constraint as above, and the allowed set holds
 * 0xffffffff, so it is covered by masked-equal "cubes" that each fix one refused bit to 1 (excludes
 * the four small values) and one bit to 0 (excludes 0xffffffff): bit b set and the next refused bit
 * clear, for each refused bit b in a cycle, which leaves only values with all refused bits set; two
 * more rules take those but 0xffffffff, and one takes anything above 32 bits.
 */
function personalityRules(): Rule[] {
  const keep = 0x8 | 0x20000;
  const refused = Array.from({ length: 32 }, (_, b) => b).filter((b) => !((keep >>> b) & 1));
  const cube = (one: number, zero: number): Rule => {
    const mask = ((1 << one) | (1 << zero)) >>> 0;
    return { names: ['personality'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: [arg(0, 'SCMP_CMP_MASKED_EQ', mask, (1 << one) >>> 0)] };
  };
  return [
    ...refused.map((b, i) => cube(b, refused[(i + 1) % refused.length]!)),
    cube(0, 3),
    cube(0, 17),
    { names: ['personality'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: [arg(0, 'SCMP_CMP_GT', 0xffffffff)] },
  ];
}

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
      // socketpair creates sockets of its family too, so it gets the same family filter.
      ...['socket', 'socketpair'].flatMap((name) => refuseOutside(name, 0, ALLOWED_SOCKET_FAMILIES, EAFNOSUPPORT)),
      ...refuseOutside('socket', 2, ALLOWED_NETLINK_PROTOCOLS, EPROTONOSUPPORT, [arg(0, 'SCMP_CMP_EQ', AF_NETLINK)]),
      // 32-bit x86 reaches socket(2) through socketcall(2) too, whose arguments seccomp cannot read.
      { names: ['socketcall'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
      ...personalityRules(),
    ],
  };
}
