// volume-fs: the volume content API's file work on a volume image (docs/volumes.md, "Content API"). Every byte
// and name in the image is the tenant's, so the image is never mounted where the host could walk it: this
// helper takes the image's lock, refuses when a sandbox has it mounted, mounts it in a mount namespace of its
// own (nosuid,nodev,noexec; gone with this process, however it ends), and does one operation below the mount
// with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): a link
// anywhere on the way (to /etc/shadow, to /proc, a directory link) is refused by the kernel, never followed.
//
//   volume-fs IMAGE MNT OP PATH [ARGS]        PATH relative to the volume's root ("" = the root)
//     stat   PATH                              one entry line
//     list   PATH DEPTH MAXENTRIES             entry lines below PATH, DEPTH levels (links not descended)
//     mkdir  PATH UID GID MODE PARENTS         entry line of the new directory
//     meta   PATH UID GID MODE                 -1 keeps a field; entry line after
//     read   PATH MAX                          the regular file's bytes on stdout, at most MAX
//     write  PATH UID GID MODE MAX             stdin (at most MAX bytes) as a new inode renamed over PATH
//     remove PATH                              a file, or a directory and everything below it
//
// Entry line: TYPE MODE UID GID SIZE ATIME_NS MTIME_NS CTIME_NS HEX(PATH) HEX(LINK TARGET), TYPE one of f d l u;
// uid/gid as stored on disk (the caller shifts them).
// Exit codes (src/volumes/volume-fs.ts maps them): 0 ok, 1 failure, 2 usage, 3 not found, 4 a link or mount
// crossing on the way, 5 larger than MAX, 6 already exists, 7 mounted by a sandbox, 8 no space left,
// 9 wrong type (a file where a directory is needed or the reverse), 10 too many entries.

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum {
  EX_OK = 0, EX_FAIL = 1, EX_USAGE = 2, EX_ABSENT = 3, EX_LINK = 4, EX_TOOBIG = 5,
  EX_EXISTS = 6, EX_BUSY = 7, EX_NOSPACE = 8, EX_TYPE = 9, EX_TOOMANY = 10,
};

static const unsigned long long RESOLVE_TENANT =
    RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

static int open_in(int rootfd, const char *path, int flags, mode_t mode) {
  struct open_how how = {.flags = (unsigned long long)flags | O_CLOEXEC, .mode = mode, .resolve = RESOLVE_TENANT};
  return (int)syscall(SYS_openat2, rootfd, path[0] ? path : ".", &how, sizeof how);
}

static int code_of(int err) {
  switch (err) {
    case ENOENT: return EX_ABSENT;
    case ELOOP: case EXDEV: return EX_LINK;
    case ENOTDIR: case EISDIR: case ENOTEMPTY: return EX_TYPE;
    case EEXIST: return EX_EXISTS;
    case ENOSPC: case EDQUOT: case EFBIG: return EX_NOSPACE;
    default: return EX_FAIL;
  }
}

static int complain(const char *what, const char *path, int err) {
  fprintf(stderr, "volume-fs: %s /%s: %s\n", what, path, strerror(err));
  return code_of(err);
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

static void hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) printf("%02x", (unsigned char)s[i]);
}

static long long ns(struct timespec t) { return (long long)t.tv_sec * 1000000000LL + t.tv_nsec; }

/** Prints the entry `name` in `dirfd` (not followed), reported as `path`. */
static int print_entry(int dirfd, const char *name, const char *path) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH)) != 0) return complain("stat", path, errno);
  char type = S_ISREG(st.st_mode) ? 'f' : S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l' : 'u';
  char target[4096];
  ssize_t tlen = 0;
  if (type == 'l') {
    tlen = readlinkat(dirfd, name, target, sizeof target);
    if (tlen < 0) tlen = 0;
  }
  printf("%c %o %u %u %lld %lld %lld %lld ", type, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid,
         (long long)st.st_size, ns(st.st_atim), ns(st.st_mtim), ns(st.st_ctim));
  hex(path, strlen(path));
  putchar(' ');
  hex(target, (size_t)tlen);
  putchar('\n');
  return EX_OK;
}

/** Splits PATH into its parent (written to `dir`) and last component; false for the root or a bad path. */
static int split(const char *path, char *dir, size_t dsize, const char **base) {
  const char *slash = strrchr(path, '/');
  *base = slash ? slash + 1 : path;
  size_t dlen = slash ? (size_t)(slash - path) : 0;
  if (**base == '\0' || strcmp(*base, ".") == 0 || strcmp(*base, "..") == 0 || dlen >= dsize) return 0;
  memcpy(dir, path, dlen);
  dir[dlen] = '\0';
  return 1;
}

/** Opens PATH's parent directory; with `make`, missing directories on the way are created (uid:gid, 0755). */
static int open_parent(int rootfd, const char *path, char *dir, size_t dsize, const char **base, int make, uid_t uid, gid_t gid) {
  if (!split(path, dir, dsize, base)) {
    errno = EINVAL;
    return -1;
  }
  int fd = open_in(rootfd, dir, O_PATH | O_DIRECTORY, 0);
  if (fd >= 0 || errno != ENOENT || !make) return fd;
  // One component at a time, each looked up with the same resolve rules.
  int cur = dup(rootfd);
  char copy[PATH_MAX];
  snprintf(copy, sizeof copy, "%s", dir);
  for (char *save = NULL, *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
    if (mkdirat(cur, c, 0755) == 0) {
      if (fchownat(cur, c, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) break;
    } else if (errno != EEXIST) {
      break;
    }
    int next = open_in(cur, c, O_PATH | O_DIRECTORY, 0);
    close(cur);
    cur = next;
    if (cur < 0) return -1;
  }
  close(cur);
  return open_in(rootfd, dir, O_PATH | O_DIRECTORY, 0);
}

static unsigned long entries, max_entries;

static int list_dir(int dir, const char *path, int depth) {
  int fd = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return complain("open", path, errno);
  DIR *d = fdopendir(fd);
  if (!d) return complain("open", path, errno);
  int rc = EX_OK;
  struct dirent *e;
  while (rc == EX_OK && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (++entries > max_entries) {
      rc = EX_TOOMANY;
      break;
    }
    char child[PATH_MAX];
    if (snprintf(child, sizeof child, "%s%s%s", path, path[0] ? "/" : "", e->d_name) >= (int)sizeof child) continue;
    rc = print_entry(dir, e->d_name, child);
    if (rc != EX_OK || depth <= 1) continue;
    // O_NOFOLLOW | O_DIRECTORY: a link (or anything not a directory) is listed but not entered.
    int sub = openat(dir, e->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) continue;
    rc = list_dir(sub, child, depth - 1);
    close(sub);
  }
  closedir(d);
  if (rc == EX_TOOMANY) fprintf(stderr, "volume-fs: more than %lu entries under /%s\n", max_entries, path);
  return rc;
}

static int remove_tree(int parent, const char *name, const char *path, int depth) {
  if (unlinkat(parent, name, 0) == 0) return EX_OK;
  if (errno != EISDIR && errno != EPERM) return complain("remove", path, errno);
  if (depth > 256) return complain("remove", path, ELOOP);
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return complain("open", path, errno);
  DIR *d = fdopendir(fd);
  if (!d) return complain("open", path, errno);
  int rc = EX_OK;
  struct dirent *e;
  while (rc == EX_OK && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    rc = remove_tree(dirfd(d), e->d_name, path, depth + 1);
    // Entries removed while reading: start the directory over so none is skipped.
    if (rc == EX_OK) rewinddir(d);
  }
  closedir(d);
  if (rc == EX_OK && unlinkat(parent, name, AT_REMOVEDIR) != 0) rc = complain("remove", path, errno);
  return rc;
}

static int parse_num(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0' || end == s || v < lo || v > hi) return 0;
  *out = v;
  return 1;
}

/** chown then chmod (chown clears set-id bits); -1 keeps a field. `fd` is an O_PATH fd of a file or directory. */
static int set_meta(int fd, const char *path, long long uid, long long gid, long long mode) {
  if ((uid >= 0 || gid >= 0) && fchownat(fd, "", uid >= 0 ? (uid_t)uid : (uid_t)-1, gid >= 0 ? (gid_t)gid : (gid_t)-1, AT_EMPTY_PATH) != 0) {
    return complain("chown", path, errno);
  }
  if (mode >= 0) {
    // An O_PATH fd cannot be fchmod'ed; its /proc/self/fd entry names the inode it already resolved.
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (chmod(proc, (mode_t)mode) != 0) return complain("chmod", path, errno);
  }
  return EX_OK;
}

static int entry_of(int rootfd, const char *path) {
  if (path[0] == '\0') return print_entry(rootfd, "", "");
  char dir[PATH_MAX];
  const char *base;
  int pfd = open_parent(rootfd, path, dir, sizeof dir, &base, 0, 0, 0);
  if (pfd < 0) return complain("open parent of", path, errno);
  int rc = print_entry(pfd, base, path);
  close(pfd);
  return rc;
}

static int op_write(int rootfd, const char *path, uid_t uid, gid_t gid, mode_t mode, unsigned long long max) {
  char dir[PATH_MAX];
  const char *base;
  int pfd = open_parent(rootfd, path, dir, sizeof dir, &base, 1, uid, gid);
  if (pfd < 0) return complain("open parent of", path, errno);
  struct stat st;
  if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) return complain("write", path, EISDIR);
  char tmp[NAME_MAX + 1];
  if (snprintf(tmp, sizeof tmp, ".cove-write-%d", (int)getpid()) >= (int)sizeof tmp) return EX_FAIL;
  unlinkat(pfd, tmp, 0);
  int fd = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return complain("create", path, errno);
  int rc = EX_OK;
  char buf[65536];
  unsigned long long total = 0;
  for (;;) {
    ssize_t r = read(0, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = complain("read input for", path, errno);
      break;
    }
    if (r == 0) break;
    total += (unsigned long long)r;
    if (total > max) {
      fprintf(stderr, "volume-fs: /%s: more than %llu bytes\n", path, max);
      rc = EX_TOOBIG;
      break;
    }
    if (write_all(fd, buf, (size_t)r) != 0) {
      rc = complain("write", path, errno);
      break;
    }
  }
  if (rc == EX_OK && fsync(fd) != 0) rc = complain("write", path, errno);
  if (rc == EX_OK && (fchown(fd, uid, gid) != 0 || fchmod(fd, mode) != 0)) rc = complain("chown", path, errno);
  close(fd);
  // rename(2) replaces whatever stands at PATH (a link included) without following it.
  if (rc == EX_OK && renameat(pfd, tmp, pfd, base) != 0) rc = complain("rename onto", path, errno);
  if (rc != EX_OK) unlinkat(pfd, tmp, 0);
  else rc = print_entry(pfd, base, path);
  close(pfd);
  return rc;
}

static int op_read(int rootfd, const char *path, unsigned long long max) {
  int fd = open_in(rootfd, path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW, 0);
  if (fd < 0) return complain("open", path, errno);
  struct stat st;
  if (fstat(fd, &st) != 0) return complain("stat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    fprintf(stderr, "volume-fs: /%s is not a regular file\n", path);
    return EX_TYPE;
  }
  if ((unsigned long long)st.st_size > max) {
    fprintf(stderr, "volume-fs: /%s is larger than %llu bytes\n", path, max);
    return EX_TOOBIG;
  }
  char buf[65536];
  unsigned long long total = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return complain("read", path, errno);
    if (r == 0) break;
    total += (unsigned long long)r;
    if (total > max) return EX_TOOBIG;
    if (write_all(1, buf, (size_t)r) != 0) return EX_FAIL;
  }
  return EX_OK;
}

static int op_mkdir(int rootfd, const char *path, uid_t uid, gid_t gid, mode_t mode, int parents) {
  char dir[PATH_MAX];
  const char *base;
  int pfd = open_parent(rootfd, path, dir, sizeof dir, &base, parents, uid, gid);
  if (pfd < 0) return complain("open parent of", path, errno);
  int rc = EX_OK;
  struct stat st;
  if (mkdirat(pfd, base, 0700) != 0) {
    // With PARENTS (the SDK's `force`), an existing directory is what was asked for, like mkdir -p.
    if (errno == EEXIST && parents && fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) rc = print_entry(pfd, base, path);
    else rc = complain("mkdir", path, errno);
  } else {
    int fd = openat(pfd, base, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    rc = fd < 0 ? complain("open", path, errno) : set_meta(fd, path, uid, gid, mode);
    if (fd >= 0) close(fd);
    if (rc == EX_OK) rc = print_entry(pfd, base, path);
  }
  close(pfd);
  return rc;
}

/**
 * True when a loop device backed by `image` is in use: some kernel mount (a sandbox's, in any namespace) holds
 * it. O_EXCL on a block device fails with EBUSY exactly while a filesystem has it mounted.
 */
static int image_mounted(const char *image) {
  glob_t g;
  if (glob("/sys/block/loop*/loop/backing_file", 0, NULL, &g) != 0) return 0;
  int busy = 0;
  for (size_t i = 0; i < g.gl_pathc && !busy; i++) {
    FILE *f = fopen(g.gl_pathv[i], "re");
    if (!f) continue;
    char backing[PATH_MAX + 16] = {0};
    if (fgets(backing, sizeof backing, f)) backing[strcspn(backing, "\n")] = '\0';
    fclose(f);
    if (strcmp(backing, image) != 0) continue;
    const char *dev = g.gl_pathv[i] + strlen("/sys/block/");
    char node[64];
    snprintf(node, sizeof node, "/dev/%.*s", (int)strcspn(dev, "/"), dev);
    int fd = open(node, O_RDONLY | O_EXCL | O_CLOEXEC);
    if (fd < 0 && errno == EBUSY) busy = 1;
    if (fd >= 0) close(fd);
  }
  globfree(&g);
  return busy;
}

static void on_alarm(int sig) { (void)sig; }

/** Whether a segment of PATH is "..": the caller normalises, this is the helper's own guard (RESOLVE_IN_ROOT too). */
static int has_dotdot(const char *path) {
  for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2) {
    if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/')) return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: volume-fs IMAGE MNT OP PATH [ARGS]\n");
    return EX_USAGE;
  }
  const char *op = argv[3], *path = argv[4];
  if (path[0] == '/' || has_dotdot(path) || strlen(path) >= PATH_MAX - 256) return EX_USAGE;
  char image[PATH_MAX];
  if (!realpath(argv[1], image)) return complain("open image", argv[1], errno);
  int imgfd = open(image, O_RDONLY | O_CLOEXEC);
  if (imgfd < 0) return complain("open image", image, errno);
  // The lock orders this against a sandbox's mount of the same image on this machine (slot-volumes.ts takes it
  // around its mount); a minute bounds the wait.
  struct sigaction sa = {.sa_handler = on_alarm};
  sigaction(SIGALRM, &sa, NULL);
  alarm(60);
  if (flock(imgfd, LOCK_EX) != 0) {
    fprintf(stderr, "volume-fs: the volume stayed locked for a minute\n");
    return EX_BUSY;
  }
  alarm(0);
  if (image_mounted(image)) {
    fprintf(stderr, "volume-fs: the volume is mounted by a running sandbox\n");
    return EX_BUSY;
  }
  // A namespace of our own: the mount is invisible to the host and dies with this process.
  if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return complain("unshare", "", errno);
  pid_t pid = fork();
  if (pid < 0) return complain("fork", "", errno);
  if (pid == 0) {
    char *const env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
    execle("/bin/sh", "sh", "-c", "exec mount -t ext4 -o loop,nosuid,nodev,noexec \"$0\" \"$1\" >&2", image, argv[2], (char *)NULL, env);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "volume-fs: the volume image could not be mounted\n");
    return EX_FAIL;
  }
  int rootfd = open(argv[2], O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return complain("open root", "", errno);
  long long a = -1, b = -1, c = -1, d = -1;
  int rc = EX_USAGE;
  if (strcmp(op, "stat") == 0 && argc == 5) {
    rc = entry_of(rootfd, path);
  } else if (strcmp(op, "list") == 0 && argc == 7 && parse_num(argv[5], 1, 64, &a) && parse_num(argv[6], 1, 1000000, &b)) {
    max_entries = (unsigned long)b;
    int fd = open_in(rootfd, path, O_PATH | O_DIRECTORY, 0);
    rc = fd < 0 ? complain("open", path, errno) : list_dir(fd, path, (int)a);
  } else if (strcmp(op, "mkdir") == 0 && argc == 9 && parse_num(argv[5], 0, 0xfffffffe, &a) && parse_num(argv[6], 0, 0xfffffffe, &b) &&
             parse_num(argv[7], 0, 07777, &c) && parse_num(argv[8], 0, 1, &d)) {
    rc = op_mkdir(rootfd, path, (uid_t)a, (gid_t)b, (mode_t)c, (int)d);
  } else if (strcmp(op, "meta") == 0 && argc == 8 && parse_num(argv[5], -1, 0xfffffffe, &a) && parse_num(argv[6], -1, 0xfffffffe, &b) &&
             parse_num(argv[7], -1, 07777, &c)) {
    int fd = open_in(rootfd, path, O_PATH, 0);
    rc = fd < 0 ? complain("open", path, errno) : set_meta(fd, path, a, b, c);
    if (fd >= 0) close(fd);
    if (rc == EX_OK) rc = entry_of(rootfd, path);
  } else if (strcmp(op, "read") == 0 && argc == 6 && parse_num(argv[5], 0, 1LL << 40, &a)) {
    rc = op_read(rootfd, path, (unsigned long long)a);
  } else if (strcmp(op, "write") == 0 && argc == 9 && parse_num(argv[5], 0, 0xfffffffe, &a) && parse_num(argv[6], 0, 0xfffffffe, &b) &&
             parse_num(argv[7], 0, 07777, &c) && parse_num(argv[8], 0, 1LL << 40, &d)) {
    rc = op_write(rootfd, path, (uid_t)a, (gid_t)b, (mode_t)c, (unsigned long long)d);
  } else if (strcmp(op, "remove") == 0 && argc == 5 && path[0] != '\0') {
    char dir[PATH_MAX];
    const char *base;
    int pfd = open_parent(rootfd, path, dir, sizeof dir, &base, 0, 0, 0);
    rc = pfd < 0 ? complain("open parent of", path, errno) : remove_tree(pfd, base, path, 0);
    if (pfd >= 0) close(pfd);
  }
  fflush(stdout);
  close(rootfd);
  // Unmounted here so the journal is flushed before the lock is let go; the namespace would drop it anyway.
  if (umount2(argv[2], 0) != 0) umount2(argv[2], MNT_DETACH);
  return rc;
}
