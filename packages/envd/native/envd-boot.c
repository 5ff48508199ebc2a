// envd-boot: how a slot starts envd, so that envd's node runs with the mmap-hints library (native/mmap-hints.c).
//
//   envd-boot FILE [ARG]...
//
// Puts the library, which is built into this binary, in a sealed memfd and becomes FILE with argv FILE ARG... and
// LD_PRELOAD=/proc/self/fd/N added to its environment, in the same process. A memfd and not a file of the bundle:
// a paused envd then maps nothing of the bundle, which CRIU would need unchanged at the resume, while a restore
// mounts whatever bundle the node has then. CRIU keeps a memfd's content in the images themselves.
//
// The library only saves memory: if any step before the exec fails, FILE runs without it. If the exec itself fails,
// this prints why on stderr and exits 127, as the slot would have had it started FILE directly.
//
// On x86-64 it needs no libc (nolibc.h).

#include "nolibc.h"

/** envd's environment is the slot spec's (~10 entries); one far larger gets no library rather than a cut one. */
#define MAX_ENV 256

// The library, built before this file (scripts/bundle.mjs passes its dir with -Wa,-I).
__asm__(
    ".section .rodata\n"
    ".balign 16\n"
    "mmap_hints_start:\n"
    ".incbin \"mmap-hints.so\"\n"
    "mmap_hints_end:\n"
    ".previous\n");
extern const char mmap_hints_start[] __asm__("mmap_hints_start");
extern const char mmap_hints_end[] __asm__("mmap_hints_end");

#ifdef COVE_NOLIBC
#define SYS_fcntl 72
#define SYS_memfd_create 319
#define MFD_ALLOW_SEALING 2U
#define F_ADD_SEALS 1033
#define F_SEAL_SEAL 1
#define F_SEAL_SHRINK 2
#define F_SEAL_GROW 4
#define F_SEAL_WRITE 8
/** The kernel's -errno on failure, as every call here. */
static long sys_memfd(const char *name, unsigned flags) { return sys3(SYS_memfd_create, (long)name, flags, 0); }
static long sys_seal(long fd, long seals) { return sys3(SYS_fcntl, fd, F_ADD_SEALS, seals); }
#else
static long sys_memfd(const char *name, unsigned flags) {
  int fd = memfd_create(name, flags);
  return fd < 0 ? -errno : fd;
}
static long sys_seal(long fd, long seals) { return fcntl((int)fd, F_ADD_SEALS, (int)seals) < 0 ? -errno : 0; }
#endif

/** The library in a sealed memfd: its descriptor, or -1. */
static long library_fd(void) {
  long fd = sys_memfd("cove-mmap-hints", MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  const char *p = mmap_hints_start;
  while (p < mmap_hints_end) {
    long n = sys_write(fd, p, mmap_hints_end - p);
    if (n <= 0) {
      sys_close(fd);
      return -1;
    }
    p += n;
  }
  // Nothing in the sandbox can change what node maps from it, even through /proc/<pid>/fd.
  if (sys_seal(fd, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) {
    sys_close(fd);
    return -1;
  }
  return fd;
}

static void run(long argc, char **argv, char **envp) {
  if (argc < 2) {
    say("usage: envd-boot FILE [ARG]...\n");
    sys_exit(127);
  }
  static char preload[48] = "LD_PRELOAD=/proc/self/fd/";
  static char *env[MAX_ENV + 2];
  char **use = envp;
  long n = 0;
  while (envp[n] && n < MAX_ENV) n++;
  long fd = envp[n] ? -1 : library_fd();
  if (fd >= 0) {
    long at = length(preload);
    char digits[20];
    long d = 0;
    for (long v = fd; d == 0 || v > 0; v /= 10) digits[d++] = (char)('0' + v % 10);
    while (d > 0) preload[at++] = digits[--d];
    preload[at] = 0;
    for (long i = 0; i < n; i++) env[i] = envp[i];
    env[n] = preload;
    env[n + 1] = 0;
    use = env;
  }
  long err = sys_execve(argv[1], argv + 1, use);
  say("envd-boot: cannot run ");
  say(argv[1]);
  say(err == -ENOENT ? ": no such file or directory\n" : ": not runnable\n");
  sys_exit(127);
}
