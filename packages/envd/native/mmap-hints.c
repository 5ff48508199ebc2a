// mmap-hints: the library envd's node runs with (preloaded by envd-boot), which drops the address hint of every
// mmap that is not MAP_FIXED.
//
// Node 20's V8 (no pointer compression) asks for each 256 KiB heap page at a random address across the 47-bit address
// space, so an idle envd's pages sit in ~50 separate 2 MiB regions, each with page-table pages of its own at up to
// three levels: ~0.6 MiB of page tables idle, ~1.2 MiB after work, in every sandbox. Without the hint the kernel
// packs the pages below the last mapping, as it does every other allocation (docs/performance.md, "envd's page
// tables"). V8 takes whatever address it is given: the hint is only a wish.
//
// envd-boot hands it over as LD_PRELOAD=/proc/self/fd/N (a sealed memfd, so no file of the bundle stays mapped in a
// paused envd): the constructor closes N and removes LD_PRELOAD before node reads its environment.

#define _GNU_SOURCE
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static void *map(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (!(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))) addr = NULL;
  // syscall() returns -1 and sets errno on failure, which is MAP_FAILED.
  return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) { return map(addr, len, prot, flags, fd, off); }
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) { return map(addr, len, prot, flags, fd, off); }

static const char PRELOAD[] = "LD_PRELOAD=/proc/self/fd/";

/** `s` starts with `prefix`: the rest of `s`, or NULL. */
static const char *after(const char *s, const char *prefix) {
  while (*prefix) {
    if (*s++ != *prefix++) return NULL;
  }
  return s;
}

/** glibc passes an ELF constructor the process's argc, argv and envp; envp is the array `environ` points at. */
__attribute__((constructor)) static void forget_preload(int argc, char **argv, char **envp) {
  (void)argc;
  (void)argv;
  for (char **e = envp; e && *e; e++) {
    const char *digits = after(*e, PRELOAD);
    if (!digits) continue;
    int fd = 0;
    for (const char *d = digits; *d >= '0' && *d <= '9' && fd < 1 << 20; d++) fd = fd * 10 + (*d - '0');
    // The mapping keeps the memfd; its descriptor would only leak into envd's children.
    if (fd > 2) close(fd);
    for (char **rest = e; *rest; rest++) rest[0] = rest[1];
    return;
  }
}
