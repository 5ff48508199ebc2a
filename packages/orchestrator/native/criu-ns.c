// criu-ns: starts criu the way a dump, a restore and a lazy-pages daemon need it, in one exec instead of a shell,
// `unshare`, a second shell and `mount` (~15 ms of CPU and of wall time before criu's first line, on every resume).
//
//   criu-ns [--join CGROUP_PROCS]... RUNDIR CRIU [ARG]...
//
// First this process joins each cgroup named by its `cgroup.procs` file (status 97 if one refuses), so criu and all
// it allocates are charged there. With RUNDIR empty it then becomes CRIU. Otherwise it forks: the child makes a
// mount namespace of its own (propagation slave: the host's later mounts still show inside, nothing mounted inside
// comes out), binds RUNDIR over /run (criu's kerndat cache, src/checkpoint/criu.ts) and becomes CRIU with
// COVE_HOST_MNTNS naming this process's mount namespace, which is the host's. This process stays, in the host's
// namespace, until CRIU ends and then exits as it did (128 + the signal that ended it): the namespace path stays
// valid as long as CRIU runs, where the orchestrator's own pid could be reused. Every fd is inherited (a
// lazy-pages daemon reports on fd 3).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

static int join_cgroup(const char *procs) {
  int fd = open(procs, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char pid[16];
  int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
  int rc = write(fd, pid, (size_t)n) == n ? 0 : -1;
  close(fd);
  return rc;
}

int main(int argc, char **argv) {
  int i = 1;
  for (; i + 1 < argc && strcmp(argv[i], "--join") == 0; i += 2) {
    if (join_cgroup(argv[i + 1]) != 0) {
      fprintf(stderr, "criu-ns: join %s: %s\n", argv[i + 1], strerror(errno));
      return 97;
    }
  }
  if (argc - i < 2) {
    fprintf(stderr, "usage: criu-ns [--join CGROUP_PROCS]... RUNDIR CRIU [ARG]...\n");
    return 2;
  }
  const char *run_dir = argv[i];
  char **criu = argv + i + 1;
  if (run_dir[0] == '\0') {
    execv(criu[0], criu);
    fprintf(stderr, "criu-ns: exec %s: %s\n", criu[0], strerror(errno));
    return 127;
  }
  char host_ns[64];
  snprintf(host_ns, sizeof host_ns, "/proc/%d/ns/mnt", (int)getpid());
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "criu-ns: fork: %s\n", strerror(errno));
    return 1;
  }
  if (pid == 0) {
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0 ||
        mount(run_dir, "/run", NULL, MS_BIND, NULL) != 0) {
      fprintf(stderr, "criu-ns: a mount namespace with %s as /run: %s\n", run_dir, strerror(errno));
      _exit(1);
    }
    setenv("COVE_HOST_MNTNS", host_ns, 1);
    execv(criu[0], criu);
    fprintf(stderr, "criu-ns: exec %s: %s\n", criu[0], strerror(errno));
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return 1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
