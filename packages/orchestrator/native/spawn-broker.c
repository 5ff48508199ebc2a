// spawn-broker: starts the host tools the orchestrator runs (crun, ip, mount, losetup, nft, ...) and sends back each
// one's exit status and output. The orchestrator must not fork itself (Node forks on its main thread, copying its
// page tables: milliseconds per tool with the event loop stopped); a Node broker cost ~4.4 ms of CPU per tool in
// its own fork and bookkeeping. Here a tool is one fork and exec from a ~1 MiB process.
//
// One long-lived process per orchestrator (`spawn-broker serve`), supervised by src/sandbox/spawn-broker.ts. Many
// tools run at once: requests are read as they come, replies leave in the order the tools finish.
//
// Frames, both ways: u32 LE body length, then the body. Integers are u32 LE; a string is a u32 length and its bytes.
//   request: ID FLAGS CMD CWD ARGC ARG... ENVC ENV... INPUT
//     FLAGS bit 0: stdin, stdout and stderr are /dev/null (INPUT is ignored): a detached tool (crun run --detach)
//     must leave nothing of the host's (a pipe) in what it starts. CWD empty: the broker's own ("/").
//     A CMD without '/' is looked up in the PATH of ENV (not the broker's, which is empty), as execvp would.
//   reply:   ID KIND VALUE STDOUT STDERR
//     KIND 0: exited with status VALUE; 1: killed by signal VALUE; 2: could not be started, VALUE the errno,
//     STDOUT its name (ENOENT), STDERR the path tried; 3: its output passed MAX_OUTPUT, it was killed.
// A CMD of the form "cove:<op>" is a host operation (host-ops.c): the forked child does it itself, with no exec,
// and answers like a tool that ran (its status, what it wrote).
// A request the broker cannot parse ends it (the caller starts a new one). When its stdin closes (the orchestrator
// is gone) it exits at once; tools still running keep running, as they would had the orchestrator started them.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host-ops.h"

/** Bounds the caller holds too (spawn-broker.ts). */
#define MAX_REQUEST (32u << 20)
#define MAX_OUTPUT (32u << 20)
#define MAX_ARGS 4096u

enum { KIND_EXITED = 0, KIND_SIGNALLED = 1, KIND_SPAWN_FAILED = 2, KIND_TOO_MUCH_OUTPUT = 3 };

struct buf {
  char *p;
  size_t len, cap;
};

struct job {
  uint32_t id;
  pid_t pid;
  int in, out, err; /* -1 once closed */
  char *input;
  size_t input_len, input_off;
  struct buf stdout_buf, stderr_buf;
  int exited, status, overflow;
  struct job *next;
};

static struct job *jobs;
static struct buf inbox;
extern char **environ;

static int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        poll(&pf, 1, -1);
        continue;
      }
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

static void put_u32(char *p, uint32_t v) {
  p[0] = (char)(v & 0xff), p[1] = (char)(v >> 8 & 0xff), p[2] = (char)(v >> 16 & 0xff), p[3] = (char)(v >> 24 & 0xff);
}

static uint32_t get_u32(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

static void reply(uint32_t id, uint32_t kind, uint32_t value, const char *out, size_t out_len, const char *err, size_t err_len) {
  // The body: ID KIND VALUE (12), STDOUT (4 + n), STDERR (4 + m).
  char head[20], err_head[4];
  put_u32(head, (uint32_t)(12 + 4 + out_len + 4 + err_len));
  put_u32(head + 4, id);
  put_u32(head + 8, kind);
  put_u32(head + 12, value);
  put_u32(head + 16, (uint32_t)out_len);
  put_u32(err_head, (uint32_t)err_len);
  if (write_all(1, head, 20) != 0 || write_all(1, out, out_len) != 0 || write_all(1, err_head, 4) != 0 ||
      write_all(1, err, err_len) != 0)
    _exit(1); /* the orchestrator is gone */
}

struct cursor {
  const char *p;
  size_t left;
  int bad;
};

static uint32_t take_u32(struct cursor *c) {
  if (c->left < 4) return c->bad = 1, 0;
  uint32_t v = get_u32(c->p);
  c->p += 4, c->left -= 4;
  return v;
}

/** A NUL-terminated copy of the next string (NULs inside are refused), or NULL. */
static char *take_str(struct cursor *c, size_t *len_out) {
  uint32_t n = take_u32(c);
  if (c->bad || n > c->left) return c->bad = 1, NULL;
  if (len_out == NULL && memchr(c->p, '\0', n) != NULL) return c->bad = 1, NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return c->bad = 1, NULL;
  memcpy(s, c->p, n);
  s[n] = '\0';
  if (len_out) *len_out = n;
  c->p += n, c->left -= n;
  return s;
}

static void free_strs(char **v) {
  if (!v) return;
  for (char **s = v; *s; s++) free(*s);
  free(v);
}

static char **take_strs(struct cursor *c) {
  uint32_t n = take_u32(c);
  if (c->bad || n > MAX_ARGS) return c->bad = 1, NULL;
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (!v) return c->bad = 1, NULL;
  for (uint32_t i = 0; i < n; i++) {
    v[i] = take_str(c, NULL);
    if (!v[i]) return free_strs(v), NULL;
  }
  return v;
}

/** CMD as execvp would find it, with ENV's PATH; NULL (errno set) when it is nowhere. */
static char *resolve(const char *cmd, char **env) {
  if (strchr(cmd, '/')) return strdup(cmd);
  const char *path = "/usr/bin:/bin";
  for (char **e = env; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  int seen_eacces = 0;
  for (const char *p = path;; p++) {
    const char *end = strchrnul(p, ':');
    char *full;
    if (asprintf(&full, "%.*s%s%s", (int)(end - p), p, end == p ? "" : "/", cmd) < 0) return NULL;
    struct stat st;
    if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(full, X_OK) == 0) return full;
      seen_eacces = 1;
    }
    free(full);
    if (*end == '\0') break;
    p = end;
  }
  errno = seen_eacces ? EACCES : ENOENT;
  return NULL;
}

static void spawn_failed(uint32_t id, int e, const char *what) {
  const char *name = strerrorname_np(e);
  if (!name) name = "EUNKNOWN";
  reply(id, KIND_SPAWN_FAILED, (uint32_t)e, name, strlen(name), what, strlen(what));
}

static void start_job(const char *body, size_t len) {
  struct cursor c = {.p = body, .left = len};
  uint32_t id = take_u32(&c), flags = take_u32(&c);
  char *cmd = take_str(&c, NULL), *cwd = take_str(&c, NULL);
  char **argv = take_strs(&c), **env = take_strs(&c);
  size_t input_len = 0;
  char *input = take_str(&c, &input_len);
  if (c.bad || c.left != 0) {
    fprintf(stderr, "spawn-broker: a request it cannot read\n");
    exit(2);
  }
  // argv[0] is the command as asked (as Node passes it); the request's ARGs follow it.
  size_t argc = 0;
  while (argv[argc]) argc++;
  char **full_argv = calloc(argc + 2, sizeof *full_argv);
  if (!full_argv) exit(1);
  full_argv[0] = cmd;
  memcpy(full_argv + 1, argv, argc * sizeof *argv);

  int null_stdio = flags & 1;
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, report[2] = {-1, -1};
  int host_op = is_host_op(cmd);
  char *path = host_op ? strdup(cmd) : resolve(cmd, env);
  int e = path ? 0 : errno;
  if (!e && !null_stdio && (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)) e = errno;
  if (!e && pipe2(report, O_CLOEXEC) != 0) e = errno;
  pid_t pid = -1;
  if (!e && (pid = fork()) < 0) e = errno;
  if (pid == 0) {
    // The tool starts with no signal blocked and every disposition at its default (SIGPIPE is ignored here; a
    // handler is reset by the exec anyway). A fork, not posix_spawn: glibc's leaves its internal signals ignored.
    for (int sig = 1; sig < NSIG; sig++)
      if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int ok = 1;
    if (null_stdio) {
      int dn = open("/dev/null", O_RDWR);
      ok = dn >= 0 && dup2(dn, 0) == 0 && dup2(dn, 1) == 1 && dup2(dn, 2) == 2;
      if (dn > 2) close(dn);
    } else {
      ok = dup2(in[0], 0) == 0 && dup2(out[1], 1) == 1 && dup2(err[1], 2) == 2;
    }
    if (ok && (!cwd[0] || chdir(cwd) == 0)) {
      if (host_op) {
        close(report[1]); /* started */
        _exit(run_host_op(cmd, argv));
      }
      execve(path, full_argv, env);
    }
    int why = errno;
    if (write(report[1], &why, sizeof why) < 0) _exit(127);
    _exit(127);
  }
  if (report[1] >= 0) close(report[1]);
  if (pid > 0) {
    // The exec closes the report pipe (EOF: started); a failure writes its errno first.
    int why;
    ssize_t r;
    while ((r = read(report[0], &why, sizeof why)) < 0 && errno == EINTR) {
    }
    if (r == (ssize_t)sizeof why) {
      e = why;
      waitpid(pid, NULL, 0);
    }
  }
  if (report[0] >= 0) close(report[0]);
  if (in[0] >= 0) close(in[0]);
  if (out[1] >= 0) close(out[1]);
  if (err[1] >= 0) close(err[1]);
  if (e) {
    if (in[1] >= 0) close(in[1]);
    if (out[0] >= 0) close(out[0]);
    if (err[0] >= 0) close(err[0]);
    spawn_failed(id, e, path ? path : cmd);
    free(input);
  } else {
    struct job *j = calloc(1, sizeof *j);
    if (!j) exit(1);
    *j = (struct job){.id = id, .pid = pid, .in = in[1], .out = out[0], .err = err[0], .input = input, .input_len = input_len, .next = jobs};
    if (j->in >= 0) fcntl(j->in, F_SETFL, O_NONBLOCK);
    if (j->in >= 0 && input_len == 0) close(j->in), j->in = -1;
    jobs = j;
  }
  free(path);
  free(full_argv);
  free(cmd);
  free(cwd);
  free_strs(argv);
  free_strs(env);
}

static void append(struct job *j, struct buf *b, int *fd) {
  char chunk[65536];
  ssize_t r = read(*fd, chunk, sizeof chunk);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (r <= 0) {
    close(*fd), *fd = -1;
    return;
  }
  if (b->len + (size_t)r > MAX_OUTPUT) {
    // A tool that floods its output is stopped, not buffered without end.
    j->overflow = 1;
    // Only while it is not reaped: after that its pid may be another process's.
    if (!j->exited) kill(j->pid, SIGKILL);
    close(*fd), *fd = -1;
    return;
  }
  if (b->len + (size_t)r > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + (size_t)r) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) exit(1);
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->len, chunk, (size_t)r);
  b->len += (size_t)r;
}

static void feed(struct job *j) {
  ssize_t w = write(j->in, j->input + j->input_off, j->input_len - j->input_off);
  if (w < 0 && (errno == EINTR || errno == EAGAIN)) return;
  // Written, or the tool closed its stdin (EPIPE): either way nothing more goes in; its status says the rest.
  if (w > 0) j->input_off += (size_t)w;
  if (w < 0 || j->input_off == j->input_len) close(j->in), j->in = -1;
}

/** Replies for the jobs whose tool has exited and whose output is all read, and forgets them. */
static void finish_done(void) {
  for (struct job **pj = &jobs; *pj;) {
    struct job *j = *pj;
    if (!j->exited || j->out >= 0 || j->err >= 0) {
      pj = &j->next;
      continue;
    }
    if (j->in >= 0) close(j->in);
    if (j->overflow) reply(j->id, KIND_TOO_MUCH_OUTPUT, MAX_OUTPUT, "", 0, "", 0);
    else if (WIFSIGNALED(j->status)) reply(j->id, KIND_SIGNALLED, (uint32_t)WTERMSIG(j->status), j->stdout_buf.p, j->stdout_buf.len, j->stderr_buf.p, j->stderr_buf.len);
    else reply(j->id, KIND_EXITED, (uint32_t)WEXITSTATUS(j->status), j->stdout_buf.p, j->stdout_buf.len, j->stderr_buf.p, j->stderr_buf.len);
    *pj = j->next;
    free(j->input);
    free(j->stdout_buf.p);
    free(j->stderr_buf.p);
    free(j);
  }
}

static void reap(int sfd) {
  struct signalfd_siginfo si;
  while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
  }
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (struct job *j = jobs; j; j = j->next)
      if (j->pid == pid) j->exited = 1, j->status = status;
  }
}

/** Takes whole frames from what stdin gave; returns -1 at its end. */
static int read_requests(void) {
  char chunk[65536];
  ssize_t r = read(0, chunk, sizeof chunk);
  if (r < 0) return errno == EINTR || errno == EAGAIN ? 0 : -1;
  if (r == 0) return -1;
  if (inbox.len + (size_t)r > inbox.cap) {
    size_t cap = inbox.cap ? inbox.cap : 65536;
    while (cap < inbox.len + (size_t)r) cap *= 2;
    char *p = realloc(inbox.p, cap);
    if (!p) exit(1);
    inbox.p = p, inbox.cap = cap;
  }
  memcpy(inbox.p + inbox.len, chunk, (size_t)r);
  inbox.len += (size_t)r;
  size_t off = 0;
  while (inbox.len - off >= 4) {
    uint32_t len = get_u32(inbox.p + off);
    if (len < 8 || len > MAX_REQUEST) {
      fprintf(stderr, "spawn-broker: bad frame of %u bytes\n", len);
      exit(2);
    }
    if (inbox.len - off - 4 < len) break;
    start_job(inbox.p + off + 4, len);
    off += 4 + (size_t)len;
  }
  memmove(inbox.p, inbox.p + off, inbox.len - off);
  inbox.len -= off;
  return 0;
}

static int serve(void) {
  // Nothing the broker inherited beyond its stdio reaches a tool (a descriptor its parent leaked, say).
  close_range(3, ~0U, 0);
  // A write to a tool that closed its stdin must fail with EPIPE, not end the broker.
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    fprintf(stderr, "spawn-broker: signalfd: %s\n", strerror(errno));
    return 1;
  }
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);
  struct pollfd *fds = NULL;
  struct job **owner = NULL;
  size_t cap = 0;
  for (;;) {
    size_t n = 2;
    for (struct job *j = jobs; j; j = j->next) n += 3;
    if (n > cap) {
      cap = n * 2;
      fds = realloc(fds, cap * sizeof *fds);
      owner = realloc(owner, cap * sizeof *owner);
      if (!fds || !owner) exit(1);
    }
    size_t k = 0;
    fds[k++] = (struct pollfd){.fd = 0, .events = POLLIN};
    fds[k++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    for (struct job *j = jobs; j; j = j->next) {
      if (j->in >= 0) owner[k] = j, fds[k++] = (struct pollfd){.fd = j->in, .events = POLLOUT};
      if (j->out >= 0) owner[k] = j, fds[k++] = (struct pollfd){.fd = j->out, .events = POLLIN};
      if (j->err >= 0) owner[k] = j, fds[k++] = (struct pollfd){.fd = j->err, .events = POLLIN};
    }
    if (poll(fds, k, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    for (size_t i = 2; i < k; i++) {
      if (!fds[i].revents) continue;
      struct job *j = owner[i];
      if (fds[i].fd == j->in) feed(j);
      else if (fds[i].fd == j->out) append(j, &j->stdout_buf, &j->out);
      else if (fds[i].fd == j->err) append(j, &j->stderr_buf, &j->err);
    }
    if (fds[1].revents) reap(sfd);
    finish_done();
    if (fds[0].revents && read_requests() != 0) return 0;
    finish_done(); /* a request that could not be started was answered at once */
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "serve") == 0) return serve();
  fprintf(stderr, "usage: spawn-broker serve (framed requests on stdin, see the source)\n");
  return 2;
}
