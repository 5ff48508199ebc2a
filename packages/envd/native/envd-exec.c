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
// On x86-64 it needs no libc (nolibc.h).

#include "nolibc.h"

#ifdef COVE_NOLIBC
#define SYS_openat 257
#define AT_FDCWD (-100)
#define O_WRONLY 01
#define O_CLOEXEC 02000000
static long sys_open_wronly(const char *path) { return sys3(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC); }
#else
static long sys_open_wronly(const char *path) { return open(path, O_WRONLY | O_CLOEXEC); }
#endif

static void run(long argc, char **argv, char **envp) {
  if (argc < 3) {
    say("usage: envd-exec SCORE FILE [ARG]...\n");
    sys_exit(127);
  }
  long fd = sys_open_wronly("/proc/self/oom_score_adj");
  if (fd >= 0) {
    // A refused score (not a number, below the floor) leaves the inherited one: the command still runs.
    (void)sys_write(fd, argv[1], length(argv[1]));
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
