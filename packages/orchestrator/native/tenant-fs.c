// tenant-fs: the node's only way to touch what a sandbox controls from the host: a file inside a tree the
// sandbox owns (a slot's rootfs, a built layer) and the hostname of its UTS namespace.
//
// Files: Node's fs resolves paths on the host, so a link planted by the tenant (`/etc` -> `/`,
// `/etc/hostname` -> `/etc/cron.d/x`, `-> /proc/sysrq-trigger`) would make host root write or read a host
// file. Here every lookup is openat2() below a directory fd with RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV: the kernel refuses any link or mount crossing on the way, and
// that check is atomic with the lookup, so a sandbox that swaps a directory for a link mid-way cannot race it.
//
// One long-lived process per orchestrator (`tenant-fs serve`), spawned once and supervised by
// src/sandbox/tenant-fs.ts: a claim must not fork the orchestrator (Node forks on its main thread at a cost
// that grows with its heap), so requests arrive over stdin and replies leave over stdout, one at a time.
//
// Frames, both ways: u32 LE body length, then the body. Integers are u32 LE; a string is a u32 length and its
// bytes (no NUL inside). Request: id, op, then
//   op 1 put   ROOT UID GID MODE N, then N times PATH LEN BYTES
//       Each file is written as a new inode (temp name, fchown, fchmod) and renamed over PATH, so a link
//       standing at PATH is replaced, never followed. A missing parent one level below ROOT is created
//       (owned UID:GID, 0755).
//   op 2 get   ROOT PATH MAX          reply data: the file's bytes
//       Only a regular file, opened non-blocking (a FIFO cannot hang the node), at most MAX bytes.
//   op 3 hostname PID STARTTIME NAME
//       Sets NAME in the UTS namespace of PID, and only if PID's start time (field 22 of /proc/PID/stat) is
//       STARTTIME once the namespace is held: a recycled pid is never entered.
//   op 4 nft COMMANDS
//       Runs nftables commands through libnftables (dlopen'ed: the node has it wherever it has `nft`), so the
//       claim's change to the internet set is not an `nft` process either. Its output and errors are
//       buffered, never written to stdout (the reply channel).
// Reply: id, code, message (a string), then data to the end of the body. Codes (the caller maps them): 0 ok,
// 2 bad request, 3 not found, 4 not a plain file or a link on the way, 5 larger than MAX, 6 the process is
// gone, 7 libnftables is not there, 1 any other failure. A frame the helper cannot read ends it (the caller
// restarts it).

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 2, EX_ABSENT = 3, EX_NOTPLAIN = 4, EX_TOOBIG = 5, EX_GONE = 6, EX_NO_NFT = 7 };
enum { OP_PUT = 1, OP_GET = 2, OP_HOSTNAME = 3, OP_NFT = 4 };

/** The largest request (a put's files) and the largest get; the caller holds the same bounds. */
#define MAX_REQUEST (32u << 20)
#define MAX_GET (16u << 20)
#define MAX_FILE (16u << 20)

static const unsigned long long RESOLVE_TENANT =
    RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

static char message[1024];
/** The host's own UTS namespace, to return to after each hostname. */
static int host_uts = -1;

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

static int say(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  return code;
}

static int complain(const char *what, const char *path, int err) {
  return say(fail_code(err), "%s %s: %s", what, path, strerror(err));
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

/** A cursor over one request body; every read is bounds-checked, strings are copied NUL-terminated. */
struct cursor {
  const char *p;
  size_t left;
  int bad;
};

static uint32_t take_u32(struct cursor *c) {
  if (c->bad || c->left < 4) {
    c->bad = 1;
    return 0;
  }
  uint32_t v = (uint32_t)(unsigned char)c->p[0] | (uint32_t)(unsigned char)c->p[1] << 8 |
               (uint32_t)(unsigned char)c->p[2] << 16 | (uint32_t)(unsigned char)c->p[3] << 24;
  c->p += 4;
  c->left -= 4;
  return v;
}

static const char *take_bytes(struct cursor *c, uint32_t n) {
  if (c->bad || c->left < n) {
    c->bad = 1;
    return NULL;
  }
  const char *b = c->p;
  c->p += n;
  c->left -= n;
  return b;
}

/** A string of at most `cap - 1` bytes without NUL, copied into `out`. */
static int take_str(struct cursor *c, char *out, size_t cap) {
  uint32_t n = take_u32(c);
  const char *b = take_bytes(c, n);
  if (!b || n >= cap || memchr(b, '\0', n) != NULL) {
    c->bad = 1;
    return -1;
  }
  memcpy(out, b, n);
  out[n] = '\0';
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
    return say(EX_USAGE, "bad path %s", path);
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

static int op_put(struct cursor *c) {
  char root[PATH_MAX], path[PATH_MAX];
  if (take_str(c, root, sizeof root) != 0) return say(EX_USAGE, "bad root");
  uid_t uid = take_u32(c);
  gid_t gid = take_u32(c);
  mode_t mode = take_u32(c) & 07777;
  uint32_t n = take_u32(c);
  if (c->bad) return say(EX_USAGE, "short put");
  int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return complain("open root", root, errno);
  int rc = EX_OK;
  for (uint32_t i = 0; i < n && rc == EX_OK; i++) {
    uint32_t len;
    const char *data;
    if (take_str(c, path, sizeof path) != 0 || (len = take_u32(c)) > MAX_FILE || !(data = take_bytes(c, len))) {
      rc = say(EX_USAGE, "bad file %u", i);
      break;
    }
    rc = put_one(rootfd, path, data, len, uid, gid, mode);
  }
  close(rootfd);
  return rc;
}

/** Reads the file into *out (malloc'd, *outlen bytes). */
static int op_get(struct cursor *c, char **out, size_t *outlen) {
  char root[PATH_MAX], path[PATH_MAX];
  if (take_str(c, root, sizeof root) != 0 || take_str(c, path, sizeof path) != 0) return say(EX_USAGE, "bad get");
  uint32_t max = take_u32(c);
  if (c->bad || max > MAX_GET) return say(EX_USAGE, "bad get bound");
  int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return complain("open root", root, errno);
  int fd = open_in(rootfd, path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW, 0);
  close(rootfd);
  if (fd < 0) return complain("open", path, errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return complain("stat", path, e);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return say(EX_NOTPLAIN, "%s is not a plain file", path);
  }
  // One byte over the bound tells a file that is too big from one that fills it exactly.
  char *buf = malloc((size_t)max + 1);
  if (!buf) {
    close(fd);
    return say(EX_FAIL, "out of memory");
  }
  size_t total = 0;
  for (;;) {
    ssize_t r = read(fd, buf + total, (size_t)max + 1 - total);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      free(buf);
      close(fd);
      return complain("read", path, e);
    }
    if (r == 0) break;
    total += (size_t)r;
    if (total > max) {
      free(buf);
      close(fd);
      return say(EX_TOOBIG, "%s is larger than %u bytes", path, max);
    }
  }
  close(fd);
  *out = buf;
  *outlen = total;
  return EX_OK;
}

/** Field 22 of /proc/PID/stat, read after the command name (which may hold spaces and parentheses). */
static int start_time_of(uint32_t pid, char *out, size_t cap) {
  char p[64], buf[1024];
  snprintf(p, sizeof p, "/proc/%u/stat", pid);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  char *s = strrchr(buf, ')');
  if (!s) return -1;
  // After ") " comes field 3 (state); field 22 is 19 fields further.
  s += 2;
  for (int field = 3; field < 22; field++) {
    s = strchr(s, ' ');
    if (!s) return -1;
    s++;
  }
  size_t len = strcspn(s, " ");
  if (len == 0 || len >= cap) return -1;
  memcpy(out, s, len);
  out[len] = '\0';
  return 0;
}

static int op_hostname(struct cursor *c) {
  char start[32], name[HOST_NAME_MAX + 1], now[32], p[64];
  uint32_t pid = take_u32(c);
  if (take_str(c, start, sizeof start) != 0 || take_str(c, name, sizeof name) != 0 || pid == 0 || name[0] == '\0') {
    return say(EX_USAGE, "bad hostname request");
  }
  snprintf(p, sizeof p, "/proc/%u/ns/uts", pid);
  int ns = open(p, O_RDONLY | O_CLOEXEC);
  if (ns < 0) return errno == ENOENT || errno == ESRCH ? say(EX_GONE, "process %u is gone", pid) : complain("open", p, errno);
  // The namespace is held from here: if the pid still has its start time, it was that process's all along.
  if (start_time_of(pid, now, sizeof now) != 0 || strcmp(now, start) != 0) {
    close(ns);
    return say(EX_GONE, "process %u is not the one started at %s", pid, start);
  }
  int rc = EX_OK;
  if (setns(ns, CLONE_NEWUTS) != 0) rc = complain("setns", p, errno);
  else {
    if (sethostname(name, strlen(name)) != 0) rc = complain("sethostname in", p, errno);
    // Never serve another request from the sandbox's namespace.
    if (setns(host_uts, CLONE_NEWUTS) != 0) {
      fprintf(stderr, "tenant-fs: cannot return to the host's UTS namespace: %s\n", strerror(errno));
      _exit(EX_FAIL);
    }
  }
  close(ns);
  return rc;
}

/** libnftables, loaded on the first nft request (declared here: its -dev headers need not be on the node). */
static struct {
  int tried;
  void *ctx;
  int (*run)(void *, const char *);
  const char *(*out)(void *);
  const char *(*err)(void *);
} nft;

static int load_nft(void) {
  if (nft.tried) return nft.ctx ? 0 : -1;
  nft.tried = 1;
  void *lib = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return -1;
  void *(*ctx_new)(uint32_t) = (void *(*)(uint32_t))dlsym(lib, "nft_ctx_new");
  int (*buffer_output)(void *) = (int (*)(void *))dlsym(lib, "nft_ctx_buffer_output");
  int (*buffer_error)(void *) = (int (*)(void *))dlsym(lib, "nft_ctx_buffer_error");
  nft.run = (int (*)(void *, const char *))dlsym(lib, "nft_run_cmd_from_buffer");
  nft.out = (const char *(*)(void *))dlsym(lib, "nft_ctx_get_output_buffer");
  nft.err = (const char *(*)(void *))dlsym(lib, "nft_ctx_get_error_buffer");
  if (!ctx_new || !buffer_output || !buffer_error || !nft.run || !nft.out || !nft.err) return -1;
  void *ctx = ctx_new(0);
  if (!ctx || buffer_output(ctx) != 0 || buffer_error(ctx) != 0) return -1;
  nft.ctx = ctx;
  return 0;
}

static int op_nft(struct cursor *c) {
  uint32_t n = take_u32(c);
  const char *b = take_bytes(c, n);
  if (!b || n == 0 || n > 65536 || memchr(b, '\0', n) != NULL) return say(EX_USAGE, "bad nft request");
  if (load_nft() != 0) return say(EX_NO_NFT, "libnftables.so.1 cannot be loaded");
  char *cmd = strndup(b, n);
  if (!cmd) return say(EX_FAIL, "out of memory");
  int rc = nft.run(nft.ctx, cmd);
  free(cmd);
  // Both buffers are read after every command: that empties them, so they do not grow over the helper's life.
  nft.out(nft.ctx);
  const char *err = nft.err(nft.ctx);
  return rc == 0 ? EX_OK : say(EX_FAIL, "nft: %s", err && *err ? err : "failed");
}

static void reply(uint32_t id, int code, const char *data, size_t datalen) {
  size_t mlen = code == EX_OK ? 0 : strlen(message);
  size_t body = 4 + 4 + 4 + mlen + datalen;
  char head[16];
  uint32_t words[4] = {(uint32_t)body, id, (uint32_t)code, (uint32_t)mlen};
  for (int i = 0; i < 4; i++)
    for (int b = 0; b < 4; b++) head[i * 4 + b] = (char)(words[i] >> (8 * b));
  if (write_all(1, head, sizeof head) != 0 || write_all(1, message, mlen) != 0 || write_all(1, data, datalen) != 0) _exit(EX_FAIL);
}

static int serve(void) {
  host_uts = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
  if (host_uts < 0) {
    fprintf(stderr, "tenant-fs: open /proc/self/ns/uts: %s\n", strerror(errno));
    return EX_FAIL;
  }
  // The caller going away closes stdin (read returns 0, the loop ends); a write to its closed stdout must end
  // the helper the same way rather than kill it by a signal mid-rename.
  signal(SIGPIPE, SIG_IGN);
  for (;;) {
    char head[4];
    if (read_exact(0, head, 4) != 0) return EX_OK;
    uint32_t len = (uint32_t)(unsigned char)head[0] | (uint32_t)(unsigned char)head[1] << 8 |
                   (uint32_t)(unsigned char)head[2] << 16 | (uint32_t)(unsigned char)head[3] << 24;
    if (len < 8 || len > MAX_REQUEST) {
      fprintf(stderr, "tenant-fs: bad frame of %u bytes\n", len);
      return EX_USAGE;
    }
    char *body = malloc(len);
    if (!body || read_exact(0, body, len) != 0) return EX_FAIL;
    struct cursor c = {.p = body, .left = len, .bad = 0};
    uint32_t id = take_u32(&c);
    uint32_t op = take_u32(&c);
    char *data = NULL;
    size_t datalen = 0;
    message[0] = '\0';
    int code;
    switch (op) {
      case OP_PUT: code = op_put(&c); break;
      case OP_GET: code = op_get(&c, &data, &datalen); break;
      case OP_HOSTNAME: code = op_hostname(&c); break;
      case OP_NFT: code = op_nft(&c); break;
      default: code = say(EX_USAGE, "unknown op %u", op);
    }
    reply(id, code, data, datalen);
    free(data);
    free(body);
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "serve") == 0) return serve();
  fprintf(stderr, "usage: tenant-fs serve (framed requests on stdin, see the source)\n");
  return EX_USAGE;
}
