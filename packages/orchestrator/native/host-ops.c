// Host operations done by the spawn broker's forked child itself, with no exec. util-linux's mount, umount and
// losetup cost 4–12 ms of CPU each here (libmount and losetup read every mount and every loop device: a node with
// a thousand loop devices pays for each), prlimit and nsenter a few ms; a slot's boot and end ran ten of them.
// Each operation is one or two system calls. Arguments are the request's ARGs; an error is written to stderr
// and the status is 1 (2 for a request this file does not understand).
//
//   cove:mount FSTYPE SOURCE TARGET FLAGS DATA   mount(2). FLAGS: comma-separated nosuid, nodev, noexec, rdonly,
//                                                bind ("" for none). DATA as the kernel takes it ("" for none).
//   cove:umount TARGET [detach]                  umount2(2), never following a link at TARGET; `detach` is lazy.
//   cove:mount-loop IMAGE TARGET                 IMAGE on a free loop device with direct I/O and autoclear (the
//                                                device detaches itself once its last mount goes, and at once if
//                                                the mount fails), mounted as ext4 nosuid,nodev at TARGET.
//                                                Prints the device (/dev/loopN).
//   cove:prlimit PID SIGPENDING MSGQUEUE         RLIMIT_SIGPENDING and RLIMIT_MSGQUEUE of PID, soft = hard.
//   cove:link-del NAME                           deletes the network link NAME (one RTM_DELLINK; `ip link del`).
//   cove:userns-sysctl PID KEY=VALUE...          writes VALUE to /proc/sys/KEY as root of PID's user namespace
//                                                (user.* sysctls are per user namespace). KEY: [a-z0-9_/], relative, no "..".

#define _GNU_SOURCE
#include "host-ops.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { OK = 0, FAILED = 1, USAGE = 2 };

static int fail(const char *what, const char *arg) {
  dprintf(2, "%s %s: %s\n", what, arg, strerror(errno));
  return FAILED;
}

static int usage(const char *op) {
  dprintf(2, "%s: bad arguments\n", op);
  return USAGE;
}

static size_t count(char **v) {
  size_t n = 0;
  while (v[n]) n++;
  return n;
}

static int parse_flags(const char *list, unsigned long *out) {
  static const struct { const char *name; unsigned long flag; } known[] = {
      {"nosuid", MS_NOSUID}, {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC}, {"rdonly", MS_RDONLY}, {"bind", MS_BIND}};
  *out = 0;
  char *copy = strdup(list), *save = NULL;
  if (!copy) return -1;
  int rc = 0;
  for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    size_t i = 0;
    while (i < sizeof known / sizeof *known && strcmp(known[i].name, t) != 0) i++;
    if (i == sizeof known / sizeof *known) rc = -1;
    else *out |= known[i].flag;
  }
  free(copy);
  return rc;
}

static int op_mount(char **a) {
  unsigned long flags;
  if (count(a) != 5 || parse_flags(a[3], &flags) != 0) return usage("cove:mount");
  if (mount(a[1], a[2], a[0][0] ? a[0] : NULL, flags, a[4][0] ? a[4] : NULL) != 0) return fail("mount on", a[2]);
  return OK;
}

static int op_umount(char **a) {
  size_t n = count(a);
  if (n < 1 || n > 2 || (n == 2 && strcmp(a[1], "detach") != 0)) return usage("cove:umount");
  if (umount2(a[0], UMOUNT_NOFOLLOW | (n == 2 ? MNT_DETACH : 0)) != 0) return fail("umount", a[0]);
  return OK;
}

static int op_mount_loop(char **a) {
  if (count(a) != 2) return usage("cove:mount-loop");
  int file = open(a[0], O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (file < 0) return fail("open", a[0]);
  int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) return fail("open", "/dev/loop-control");
  // Another process may take the free device between asking and configuring it (EBUSY): ask again.
  for (int tries = 0; tries < 100; tries++) {
    int n = ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) return fail("LOOP_CTL_GET_FREE on", "/dev/loop-control");
    char dev[32];
    snprintf(dev, sizeof dev, "/dev/loop%d", n);
    int lfd = open(dev, O_RDWR | O_CLOEXEC);
    if (lfd < 0) {
      if (errno == ENOENT) continue;
      return fail("open", dev);
    }
    struct loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.fd = (unsigned)file;
    cfg.info.lo_flags = LO_FLAGS_DIRECT_IO | LO_FLAGS_AUTOCLEAR;
    strncpy((char *)cfg.info.lo_file_name, a[0], LO_NAME_SIZE - 1);
    if (ioctl(lfd, LOOP_CONFIGURE, &cfg) != 0) {
      int e = errno;
      close(lfd);
      if (e == EBUSY) continue;
      errno = e;
      return fail("LOOP_CONFIGURE on", dev);
    }
    // Closing the device before the mount holds it would detach it (autoclear): mount first.
    int rc = mount(dev, a[1], "ext4", MS_NOSUID | MS_NODEV, NULL) == 0 ? OK : fail("mount on", a[1]);
    close(lfd);
    if (rc == OK) dprintf(1, "%s\n", dev);
    return rc;
  }
  errno = EBUSY;
  return fail("no free loop device for", a[0]);
}

static int number(const char *s, long long *out) {
  char *end;
  errno = 0;
  *out = strtoll(s, &end, 10);
  return errno == 0 && *s && *end == '\0' && *out >= 0 ? 0 : -1;
}

static int op_prlimit(char **a) {
  long long pid, sig, mq;
  if (count(a) != 3 || number(a[0], &pid) != 0 || pid == 0 || number(a[1], &sig) != 0 || number(a[2], &mq) != 0) {
    return usage("cove:prlimit");
  }
  struct rlimit s = {(rlim_t)sig, (rlim_t)sig}, q = {(rlim_t)mq, (rlim_t)mq};
  if (prlimit((pid_t)pid, RLIMIT_SIGPENDING, &s, NULL) != 0) return fail("RLIMIT_SIGPENDING of", a[0]);
  if (prlimit((pid_t)pid, RLIMIT_MSGQUEUE, &q, NULL) != 0) return fail("RLIMIT_MSGQUEUE of", a[0]);
  return OK;
}

static int op_link_del(char **a) {
  if (count(a) != 1 || a[0][0] == '\0' || strlen(a[0]) >= IFNAMSIZ) return usage("cove:link-del");
  struct {
    struct nlmsghdr nh;
    struct ifinfomsg ifi;
    char attrs[RTA_SPACE(IFNAMSIZ)];
  } req;
  memset(&req, 0, sizeof req);
  req.nh.nlmsg_type = RTM_DELLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.ifi.ifi_family = AF_UNSPEC;
  struct rtattr *name = (struct rtattr *)req.attrs;
  name->rta_type = IFLA_IFNAME;
  name->rta_len = (unsigned short)RTA_LENGTH(strlen(a[0]) + 1);
  memcpy(RTA_DATA(name), a[0], strlen(a[0]) + 1);
  req.nh.nlmsg_len = (uint32_t)(NLMSG_LENGTH(sizeof req.ifi) + RTA_ALIGN(name->rta_len));
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return fail("netlink socket for", a[0]);
  if (send(fd, &req, req.nh.nlmsg_len, 0) < 0) return fail("RTM_DELLINK", a[0]);
  char buf[1024];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  if (n < 0) return fail("RTM_DELLINK answer for", a[0]);
  struct nlmsghdr *h = (struct nlmsghdr *)buf;
  if (n < (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) || h->nlmsg_type != NLMSG_ERROR) {
    errno = EPROTO;
    return fail("RTM_DELLINK answer for", a[0]);
  }
  int e = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
  if (e != 0) {
    errno = -e;
    return fail("delete link", a[0]);
  }
  return OK;
}

static int op_userns_sysctl(char **a) {
  long long pid;
  if (count(a) < 2 || number(a[0], &pid) != 0 || pid == 0) return usage("cove:userns-sysctl");
  for (char **kv = a + 1; *kv; kv++) {
    const char *eq = strchr(*kv, '=');
    if (!eq || eq == *kv || **kv == '/' || strspn(*kv, "abcdefghijklmnopqrstuvwxyz0123456789_/") != (size_t)(eq - *kv) || strstr(*kv, "..")) {
      return usage("cove:userns-sysctl");
    }
  }
  char ns[64];
  snprintf(ns, sizeof ns, "/proc/%lld/ns/user", pid);
  int fd = open(ns, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail("open", ns);
  if (setns(fd, CLONE_NEWUSER) != 0) return fail("setns", ns);
  close(fd);
  for (char **kv = a + 1; *kv; kv++) {
    char *eq = strchr(*kv, '='), path[256];
    snprintf(path, sizeof path, "/proc/sys/%.*s", (int)(eq - *kv), *kv);
    int f = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0) return fail("open", path);
    size_t len = strlen(eq + 1);
    if (write(f, eq + 1, len) != (ssize_t)len) return fail("write", path);
    close(f);
  }
  return OK;
}

int is_host_op(const char *cmd) {
  return strncmp(cmd, HOST_OP_PREFIX, strlen(HOST_OP_PREFIX)) == 0;
}

int run_host_op(const char *cmd, char **args) {
  const char *name = cmd + strlen(HOST_OP_PREFIX);
  if (strcmp(name, "mount") == 0) return op_mount(args);
  if (strcmp(name, "umount") == 0) return op_umount(args);
  if (strcmp(name, "mount-loop") == 0) return op_mount_loop(args);
  if (strcmp(name, "prlimit") == 0) return op_prlimit(args);
  if (strcmp(name, "link-del") == 0) return op_link_del(args);
  if (strcmp(name, "userns-sysctl") == 0) return op_userns_sysctl(args);
  dprintf(2, "unknown host operation %s\n", cmd);
  return USAGE;
}
