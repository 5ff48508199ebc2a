// tenant-fs: the node's only way to read or write a file inside a tree a sandbox controls (a slot's rootfs,
// a built layer). Node's fs resolves paths on the host, so a link planted by the tenant (`/etc` -> `/`,
// `/etc/hostname` -> `/etc/cron.d/x`, `-> /proc/sysrq-trigger`) would make host root write or read a host
// file. Here every lookup is openat2() below a directory fd with RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV: the kernel refuses any link or mount crossing on the way, and
// that check is atomic with the lookup, so a sandbox that swaps a directory for a link mid-way cannot race it.
//
//   tenant-fs put ROOT UID GID MODE PATH=LEN [PATH=LEN ...]   contents back to back on stdin
//       Each file is written as a new inode (temp name, fchown, fchmod) and renamed over PATH, so a link
//       standing at PATH is replaced, never followed. A missing parent one level below ROOT is created
//       (owned UID:GID, 0755).
//   tenant-fs get ROOT PATH MAX                              the file's bytes on stdout
//       Only a regular file, opened non-blocking (a FIFO cannot hang the node), at most MAX bytes.
//
// Exit codes (the caller maps them; see src/sandbox/tenant-fs.ts): 0 ok, 2 usage, 3 not found,
// 4 not a plain file or a link on the way, 5 larger than MAX, 1 any other failure. stderr says which
// path and errno.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 2, EX_ABSENT = 3, EX_NOTPLAIN = 4, EX_TOOBIG = 5 };

static const unsigned long long RESOLVE_TENANT =
    RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

static int open_in(int rootfd, const char *path, int flags, mode_t mode) {
  struct open_how how = {.flags = (unsigned long long)flags | O_CLOEXEC, .mode = mode, .resolve = RESOLVE_TENANT};
  return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

static int fail_code(int err) {
  if (err == ENOENT) return EX_ABSENT;
  // ELOOP: a link on the way; EXDEV: a mount crossing; ENOTDIR: a file where a directory should be.
  if (err == ELOOP || err == EXDEV || err == ENOTDIR) return EX_NOTPLAIN;
  return EX_FAIL;
}

static int complain(const char *what, const char *path, int err) {
  fprintf(stderr, "tenant-fs: %s %s: %s\n", what, path, strerror(err));
  return fail_code(err);
}

static int write_all(int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_exact(int fd, char *buf, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, buf, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    buf += r;
    n -= (size_t)r;
  }
  return 0;
}

/** Opens PATH's parent directory below ROOT (creating it when it is ROOT's direct child and missing). */
static int open_parent(int rootfd, const char *dir, uid_t uid, gid_t gid) {
  if (dir[0] == '\0') return dup(rootfd);
  int fd = open_in(rootfd, dir, O_PATH | O_DIRECTORY, 0);
  if (fd >= 0 || errno != ENOENT || strchr(dir, '/') != NULL) return fd;
  if (mkdirat(rootfd, dir, 0755) != 0 && errno != EEXIST) return -1;
  // AT_SYMLINK_NOFOLLOW: had the sandbox put a link there meanwhile, only the link would change owner.
  if (fchownat(rootfd, dir, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) return -1;
  return open_in(rootfd, dir, O_PATH | O_DIRECTORY, 0);
}

static int put_one(int rootfd, const char *path, const char *data, size_t len, uid_t uid, gid_t gid, mode_t mode) {
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t dlen = slash ? (size_t)(slash - path) : 0;
  if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || dlen >= sizeof dir) {
    fprintf(stderr, "tenant-fs: bad path %s\n", path);
    return EX_USAGE;
  }
  memcpy(dir, path, dlen);
  dir[dlen] = '\0';
  int dirfd = open_parent(rootfd, dir, uid, gid);
  if (dirfd < 0) return complain("open parent of", path, errno);
  char tmp[NAME_MAX + 1];
  if (snprintf(tmp, sizeof tmp, ".cove-%d-%.200s", (int)getpid(), base) >= (int)sizeof tmp) {
    close(dirfd);
    return complain("name", path, ENAMETOOLONG);
  }
  // O_EXCL | O_NOFOLLOW: a fresh inode of our own, whatever the sandbox left under the temp name.
  unlinkat(dirfd, tmp, 0);
  int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    close(dirfd);
    return complain("create", path, e);
  }
  int rc = EX_OK;
  if (write_all(fd, data, len) != 0 || fchown(fd, uid, gid) != 0 || fchmod(fd, mode) != 0) rc = complain("write", path, errno);
  close(fd);
  if (rc == EX_OK && renameat(dirfd, tmp, dirfd, base) != 0) rc = complain("rename onto", path, errno);
  if (rc != EX_OK) unlinkat(dirfd, tmp, 0);
  close(dirfd);
  return rc;
}

static int cmd_put(int argc, char **argv) {
  if (argc < 7) return EX_USAGE;
  int rootfd = open(argv[2], O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return complain("open root", argv[2], errno);
  uid_t uid = (uid_t)strtoul(argv[3], NULL, 10);
  gid_t gid = (gid_t)strtoul(argv[4], NULL, 10);
  mode_t mode = (mode_t)strtoul(argv[5], NULL, 8) & 07777;
  for (int i = 6; i < argc; i++) {
    char *eq = strrchr(argv[i], '=');
    if (!eq) return EX_USAGE;
    *eq = '\0';
    char *end;
    unsigned long len = strtoul(eq + 1, &end, 10);
    if (*end != '\0' || len > (1u << 20)) return EX_USAGE;
    char *buf = malloc(len ? len : 1);
    if (!buf || read_exact(0, buf, len) != 0) {
      fprintf(stderr, "tenant-fs: short input for %s\n", argv[i]);
      return EX_USAGE;
    }
    int rc = put_one(rootfd, argv[i], buf, len, uid, gid, mode);
    free(buf);
    if (rc != EX_OK) return rc;
  }
  return EX_OK;
}

static int cmd_get(int argc, char **argv) {
  if (argc != 5) return EX_USAGE;
  char *end;
  unsigned long long max = strtoull(argv[4], &end, 10);
  if (*end != '\0' || max > (1ull << 30)) return EX_USAGE;
  int rootfd = open(argv[2], O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return complain("open root", argv[2], errno);
  int fd = open_in(rootfd, argv[3], O_RDONLY | O_NONBLOCK | O_NOFOLLOW, 0);
  if (fd < 0) return complain("open", argv[3], errno);
  struct stat st;
  if (fstat(fd, &st) != 0) return complain("stat", argv[3], errno);
  if (!S_ISREG(st.st_mode)) {
    fprintf(stderr, "tenant-fs: %s is not a plain file\n", argv[3]);
    return EX_NOTPLAIN;
  }
  char buf[65536];
  unsigned long long total = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return complain("read", argv[3], errno);
    if (r == 0) break;
    total += (unsigned long long)r;
    if (total > max) {
      fprintf(stderr, "tenant-fs: %s is larger than %llu bytes\n", argv[3], max);
      return EX_TOOBIG;
    }
    if (write_all(1, buf, (size_t)r) != 0) return EX_FAIL;
  }
  return EX_OK;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "put") == 0) return cmd_put(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "get") == 0) return cmd_get(argc, argv);
  fprintf(stderr, "usage: tenant-fs put ROOT UID GID MODE PATH=LEN... | get ROOT PATH MAX\n");
  return EX_USAGE;
}
