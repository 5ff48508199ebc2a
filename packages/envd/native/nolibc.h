// What envd's two static helpers (envd-exec.c, envd-boot.c) share: the few system calls both make and their entry.
// On x86-64 they need no libc: no loader, no libc start-up, so a helper costs ~0.05 ms where a static glibc build
// costs ~0.3 ms (docs/decisions.md). Elsewhere, or with ENVD_EXEC_LIBC defined, they are built against libc.
//
// A helper includes this first, then defines `run(argc, argv, envp)`, which this file's entry calls.

#ifndef COVE_NOLIBC_H
#define COVE_NOLIBC_H

#if defined(__x86_64__) && !defined(ENVD_EXEC_LIBC)

#define COVE_NOLIBC 1
#define ENOENT 2
#define ENOEXEC 8
#define SYS_write 1
#define SYS_close 3
#define SYS_execve 59
#define SYS_exit 60

static long sys3(long nr, long a, long b, long c) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return ret;
}

/** Bytes written, or the kernel's -errno, as every call here. */
static long sys_write(long fd, const char *buf, long len) { return sys3(SYS_write, fd, (long)buf, len); }
static void sys_close(long fd) { (void)sys3(SYS_close, fd, 0, 0); }
static long sys_execve(const char *file, char **argv, char **envp) { return sys3(SYS_execve, (long)file, (long)argv, (long)envp); }
static void __attribute__((noreturn)) sys_exit(int code) {
  for (;;) (void)sys3(SYS_exit, code, 0, 0);
}

#else

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static long sys_write(long fd, const char *buf, long len) {
  long n = write((int)fd, buf, (size_t)len);
  return n < 0 ? -errno : n;
}
static void sys_close(long fd) { (void)close((int)fd); }
static long sys_execve(const char *file, char **argv, char **envp) { return execve(file, argv, envp) < 0 ? -errno : 0; }
static void __attribute__((noreturn)) sys_exit(int code) { _exit(code); }

#endif

static long length(const char *s) {
  long n = 0;
  while (s[n]) n++;
  return n;
}

static void say(const char *s) { (void)sys_write(2, s, length(s)); }

static void __attribute__((noreturn)) run(long argc, char **argv, char **envp);

#ifdef COVE_NOLIBC

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

#endif
