// envd-exec: what envd starts every command through, so the command has its OOM score from its first instruction.
//
//   envd-exec SCORE FILE [ARG]...
//
// Writes SCORE to its own /proc/self/oom_score_adj, then becomes FILE with argv FILE ARG... (the argv Node would
// have given it), in the same process. envd cannot do this itself: Node has no hook between fork and exec, a score
// written after `spawn` returns comes after the exec (a fast command could read, or fork with, envd's 0), and envd
// cannot raise its own score for the child to inherit (it runs from an execute-only node, so its /proc files are
// not its own). This process can: it was exec'd from a readable file.
//
// A FILE the kernel will not run as a binary (ENOEXEC) runs as `/bin/sh FILE ARG...`, as Node's spawn does. Any
// other failure prints why on stderr and exits 127 (not found) or 126 (found, not runnable), as a shell does.
//
// On x86-64 it needs no libc: no loader, no libc start-up, so it costs a command ~0.05 ms where a static glibc
// build costs ~0.3 ms (docs/decisions.md). Elsewhere it is built against libc.

#define ENOENT 2
#define ENOEXEC 8

#if defined(__x86_64__) && !defined(ENVD_EXEC_LIBC)

#define SYS_write 1
#define SYS_close 3
#define SYS_execve 59
#define SYS_exit 60
#define SYS_openat 257
#define AT_FDCWD (-100)
#define O_WRONLY 01
#define O_CLOEXEC 02000000

static long sys3(long nr, long a, long b, long c) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return ret;
}

static long sys_open_wronly(const char *path) { return sys3(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC); }
static void sys_write(long fd, const char *buf, long len) { (void)sys3(SYS_write, fd, (long)buf, len); }
static void sys_close(long fd) { (void)sys3(SYS_close, fd, 0, 0); }
/** The kernel's -errno on failure. */
static long sys_execve(const char *file, char **argv, char **envp) { return sys3(SYS_execve, (long)file, (long)argv, (long)envp); }
static void __attribute__((noreturn)) sys_exit(int code) {
  for (;;) (void)sys3(SYS_exit, code, 0, 0);
}

#else

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static long sys_open_wronly(const char *path) { return open(path, O_WRONLY | O_CLOEXEC); }
static void sys_write(long fd, const char *buf, long len) { (void)!write((int)fd, buf, (size_t)len); }
static void sys_close(long fd) { (void)close((int)fd); }
static long sys_execve(const char *file, char **argv, char **envp) { return execve(file, argv, envp) < 0 ? -errno : 0; }
static void __attribute__((noreturn)) sys_exit(int code) { _exit(code); }

#endif

static long length(const char *s) {
  long n = 0;
  while (s[n]) n++;
  return n;
}

static void say(const char *s) { sys_write(2, s, length(s)); }

static void __attribute__((noreturn)) run(long argc, char **argv, char **envp) {
  if (argc < 3) {
    say("usage: envd-exec SCORE FILE [ARG]...\n");
    sys_exit(127);
  }
  long fd = sys_open_wronly("/proc/self/oom_score_adj");
  if (fd >= 0) {
    // A refused score (not a number, below the floor) leaves the inherited one: the command still runs.
    sys_write(fd, argv[1], length(argv[1]));
    sys_close(fd);
  }
  long err = sys_execve(argv[2], argv + 2, envp);
  if (err == -ENOEXEC) {
    // argv[1] (the score) is spent: reuse its slot so the shell's argv is /bin/sh FILE ARG...
    argv[1] = "/bin/sh";
    err = sys_execve(argv[1], argv + 1, envp);
  }
  say("envd: cannot run ");
  say(argv[2]);
  say(err == -ENOENT ? ": no such file or directory (or its interpreter)\n" : ": not runnable\n");
  sys_exit(err == -ENOENT ? 127 : 126);
}

#if defined(__x86_64__) && !defined(ENVD_EXEC_LIBC)

/** The kernel's entry: argc, argv..., NULL, envp... on the stack. */
__attribute__((used, noreturn)) static void start_c(long *sp) {
  long argc = sp[0];
  char **argv = (char **)(sp + 1);
  run(argc, argv, argv + argc + 1);
}

__asm__(
    ".text\n"
    ".global _start\n"
    "_start:\n"
    "  xor %ebp, %ebp\n"
    "  mov %rsp, %rdi\n"
    "  and $-16, %rsp\n"
    "  call start_c\n"
    "  hlt\n");

#else

extern char **environ;

int main(int argc, char **argv) { run(argc, argv, environ); }

#endif
