#!/usr/bin/env bash
# Builds CRIU 4.1.1 from Debian 13's source package and installs the binary into a Cove-owned prefix.
#   install-criu.sh [--prefix DIR]        (default /var/lib/cove/tools, or $COVE_TOOLS_DIR)
# Why: Debian 12 ships CRIU 3.17, which fails on kernels >= 6.13 ("Unexpected rt vDSO area bounds");
# 4.1 handles the new [vvar_vclock] mapping. Only Debian's registry is reachable, so the source comes
# from trixie's deb-src (the upstream .orig.tar.xz) and is built with bookworm's build dependencies.
# Idempotent: a present binary whose `criu check` passes is left alone (well under a second).
set -euo pipefail

VERSION=4.1.1
# Bumped with every change of the patches below: each patch set installs into a directory of its own
# (criu.ts's DEFAULT_CRIU names it), so hosts running checkouts with another patch set never swap
# each other's binary back and forth.
PATCH_LEVEL=8
SELF="$(readlink -f "$0")"
PREFIX="${COVE_TOOLS_DIR:-/var/lib/cove/tools}"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install-criu: unknown argument: $1" >&2; exit 2 ;;
  esac
done
DEST="$PREFIX/criu-$VERSION-cove$PATCH_LEVEL"
BIN="$DEST/criu"

say() { printf 'install-criu: %s\n' "$*" >&2; }
die() { printf 'install-criu: FAILED: %s\n' "$*" >&2; exit 1; }

# Twelve small changes on top of 4.1.1 (the heredoc at the end of this file): the first six are needed to
# checkpoint a Cove sandbox on this kernel, 7, 8, 11 and 12 make a pause and a resume faster, 9 and 10 keep
# what a unix socket's queue passes (bytes and file descriptors) whole:
#  1. dump's "namespaces belong to the target userns" check opened /proc/<pid>/ns/* after entering the
#     userns; a sandbox's PID 1 runs an execute-only binary, so its mm belongs to the host userns and
#     that open fails (EACCES) although the namespaces do belong to the sandbox's userns. Open first.
#  2. Linux >= 6.16 refuses SO_PASSCRED/SO_PASSSEC on TCP sockets (EOPNOTSUPP); 4.1.1 treats that as a
#     dump failure, so no sandbox with a listening socket could be checkpointed. Treat it as "off".
#  3. An inotify watch on overlayfs (a desktop's config monitors, any file watcher) has no openable file
#     handle, so the dump finds its path by scanning the dumped tree (irmap), which 4.1.1 does with plain
#     openat/fstatat from the tree's root: a tenant's symlink (/var -> /var) leads that root-owned scan
#     into the host's tree, a FUSE mount of theirs hangs it, a huge tree exhausts its memory. The scan now
#     resolves with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV) — inside the tree's root
#     mount only, never through a link or into another mount — and stops (the dump fails, the sandbox runs
#     on) after 2^18 entries or 32 MiB of paths.
#  4. A process group or session whose leader is dead (dbus-launch's bus, xfce4-session's forks) is
#     restored through a helper task, which 4.1.1 forks sharing its parent's fd table and fs_struct
#     (CLONE_FILES | CLONE_FS). The kernel refuses setns(CLONE_NEWNS) to a task whose fs_struct is
#     shared (EINVAL), and restoring a path-bound unix socket enters the socket's mount namespace, so
#     the parent's restore failed ("Can't setns 7/mnt: Invalid argument", "Unable to open fd=4"). The
#     helper restores no files: it is now forked with a table and fs_struct of its own and an empty
#     fd list. (Same cause as upstream issue #2687, fixed there after 4.1.1.)
#  5. A browser (Firefox) keeps a NETLINK_ROUTE socket subscribed to link/address/neighbour groups; a
#     notification that arrives while the tree is frozen (a neighbour entry going stale) failed the dump
#     ("The socket has data to read"). Queued data on a route or uevent socket with multicast groups is
#     now dropped (a warning): it describes a netns the restore makes anew. Any other netlink socket with
#     data still fails the dump. And file locks (dumped with --file-locks, which criu.ts always passes) are
#     restored without waiting (LOCK_NB, F_SETLK): a lock someone outside the tree took on a shared file
#     meanwhile makes the restore fail ("Can not set flock") instead of hanging it forever.
#  6. Lazy restore (`restore --lazy-pages`, criu.ts) makes each restored task open a userfaultfd for its own
#     memory. The tasks already run in the sandbox's user namespace, and with vm.unprivileged_userfaultfd=0
#     (the default, and right: it keeps a kernel-fault-stalling primitive from every unprivileged process)
#     the syscall wants CAP_SYS_PTRACE in the initial namespace, so it fails (EPERM). criu (root) now opens
#     /dev/userfaultfd (Linux >= 6.1) before it forks the tree and keeps it in its fd store; a task whose
#     syscall is refused makes the same descriptor with USERFAULTFD_IOC_NEW on it and closes the device's
#     descriptor at once, so no restored process keeps a way to make userfaultfds of its own.
#  7. The lazy-pages daemon copied memory in the background task by task in the order the tasks registered,
#     so envd could wait for all of a large worker's pages while serving its own one fault at a time (~700
#     faults, 30-40 ms before its first answer after a resume). A task that faults now goes first in the
#     background copy, and a fault brings up to 16 pages of its range.
#  8. Every tmpfs was dumped by running tar and gzip and restored by running them again, also for the empty
#     ones every sandbox has (/proc/acpi and /sys/firmware masks, an unused /dev/shm): ~10 ms a mount on a
#     dump, ~5 ms on a restore. An empty tmpfs whose root has the mode and owner its mount options give is
#     now dumped as a constant empty archive, and a restore that finds that constant runs nothing; any
#     other criu extracts it as the empty archive it is. A tmpfs with an entry, or whose root was chmod'ed
#     or chown'ed, goes through tar as before.
#  9. A unix stream socket's queue was dumped by peeks of at most the socket's SO_SNDBUF bytes. A peek
#     glues skbs and gets the fds (SCM_RIGHTS) of an skb it ends inside; the next peek, starting inside the
#     same skb, got them again. So an skb with fds that crossed a peek's end was restored with its fds two or
#     three times, and a receiver pairing fds with messages read the wrong ones (Firefox's parent process
#     died on an IPC message it could not deserialize after one resume in ~10). Stream queues are now peeked
#     whole, so each peek ends after an skb with fds or at the queue's end.
# 10. A socketpair whose two ends live in different processes (a browser's IPC between its parent and a
#     content process) lost its queued data on a restore whenever the queue passed file descriptors: one
#     task restores the pair, which found the passed files not yet open, called the pair done and never
#     sent the queues (the bytes a receiver had not read were gone). Those files had also been given to the
#     queuer's own task, so the queue would have carried that task's fd numbers. The pair now waits for the
#     files; it is paired up before the files are handed out, so they go to the task that sends its queues;
#     and a passed file never becomes the master of what it is (it could take a socket from its pair's task).
# 11. A lazy restore connected to the lazy-pages daemon's socket once, early in its start, so the node had to
#     wait for the daemon to listen (~35 ms from its start) before it could start the restore. The connect
#     now retries a missing socket or one nobody listens on yet every millisecond for at most 10 s, so the
#     node starts both at once (criu.ts); any other error, or the bound, fails the restore as before.
# 12. A restore ran its action script for each of its seven actions, a fork of criu and an exec each, although
#     Cove's script works in one (setup-namespaces) and exits at once in the others: ~1.5 ms each on the
#     restore's path. CRIU_SCRIPT_ACTIONS (a comma-separated list of action names), when set, limits the
#     scripts to those actions; unset, every action runs them as before.
PATCH_ID="$(sed -n '/^__COVE_PATCH__$/,$p' "$SELF" | sha256sum | cut -c1-16)"
if [ -x "$BIN" ] && [ "$(cat "$DEST/PATCHES" 2>/dev/null)" = "$PATCH_ID" ] && "$BIN" check >/dev/null 2>&1; then
  say "criu $VERSION present at $BIN (patches $PATCH_ID, criu check passes)"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root (installs Debian packages)"
START=$(date +%s)

# Build dependencies from bookworm (what `make criu` needs; no docs, no plugins, no tests):
# protobuf-c runtime + compiler and python3-protobuf generate the image format code; libnl-3, libnet,
# libcap, libbsd, gnutls (TLS for page-server), libnftables (network locking), libuuid are linked in.
BUILD_DEPS=(build-essential patch pkg-config python3 python3-protobuf protobuf-compiler protobuf-c-compiler
  libprotobuf-dev libprotobuf-c-dev libnl-3-dev libnet1-dev libcap-dev libbsd-dev libgnutls28-dev
  libnftables-dev uuid-dev libaio-dev xz-utils dpkg-dev iproute2)
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${BUILD_DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing build dependencies: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# Only source packages come from trixie (deb-src), so nothing from Debian 13 is ever installed.
SRC_LIST=/etc/apt/sources.list.d/cove-criu-src.sources
if [ ! -f "$SRC_LIST" ]; then
  say "adding $SRC_LIST (deb-src trixie main)"
  cat >"$SRC_LIST" <<'EOF'
# Added by Cove's install-criu.sh: source packages only (CRIU 4.1 is built from trixie's source).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

WORK="$(mktemp -d /var/tmp/cove-criu-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# Only the upstream tarball is needed. On this registry the .dsc and .debian.tar.xz of trixie's criu are
# not served (404), so apt-get source exits non-zero even when the .orig.tar.xz arrived: judge by the file.
chmod 0755 "$WORK"   # apt's _apt user downloads into it
say "downloading the criu source package"
if ! apt-cache showsrc criu 2>/dev/null | grep -q "^Version: $VERSION"; then
  # Refresh only the trixie source index (keeps the other lists as they are).
  apt-get update -qq -o Dir::Etc::sourcelist="$SRC_LIST" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0 || die "apt-get update of $SRC_LIST failed"
fi
SRC_VERSION="$(apt-cache showsrc criu 2>/dev/null | awk '/^Version: /{print $2}' | grep "^$VERSION" | sort -V | tail -1)"
[ -n "$SRC_VERSION" ] || die "no criu $VERSION source in the apt source lists (is $SRC_LIST reachable?)"
ORIG="$WORK/criu_$VERSION.orig.tar.xz"
apt-get source --download-only "criu=$SRC_VERSION" >"$WORK/fetch.log" 2>&1 || true
[ -f "$ORIG" ] || { cat "$WORK/fetch.log" >&2; die "apt-get source criu=$SRC_VERSION did not download $(basename "$ORIG")"; }
# apt checked the download against the signed Sources index; check again, explicitly, against that index.
WANT="$(apt-cache showsrc criu 2>/dev/null | awk -v v="$SRC_VERSION" -v n="$(basename "$ORIG")" '
  /^$/ {ver=""; f=0} /^Version: / {ver=$2}
  /^Checksums-Sha256:/ {f=1; next} f && !/^ / {f=0}
  f && ver==v && $3==n {print $1; exit}')"
GOT="$(sha256sum "$ORIG" | cut -d' ' -f1)"
[ -n "$WANT" ] && [ "$WANT" = "$GOT" ] || die "sha256 of $(basename "$ORIG") ($GOT) does not match the Sources index (${WANT:-none})"
say "got $(basename "$ORIG") ($(du -h "$ORIG" | cut -f1), sha256 matches the signed Sources index of $SRC_VERSION)"

tar -xf "$ORIG"
SRC_DIR="$(find "$WORK" -maxdepth 1 -type d -name "criu-$VERSION*" | head -1)"
[ -n "$SRC_DIR" ] || die "unexpected layout in $(basename "$ORIG")"
sed -n '/^__COVE_PATCH__$/,$p' "$SELF" | tail -n +2 | patch -d "$SRC_DIR" -p1 -s >"$WORK/patch.log" 2>&1 \
  || { cat "$WORK/patch.log" >&2; die "applying Cove's patches to criu $VERSION failed"; }
say "building (make criu, $(nproc) jobs)"
if ! make -C "$SRC_DIR" -j"$(nproc)" criu >"$WORK/build.log" 2>&1; then
  tail -40 "$WORK/build.log" >&2
  die "make criu failed"
fi
[ -x "$SRC_DIR/criu/criu" ] || die "build produced no criu/criu"

mkdir -p "$DEST"
install -m 0755 "$SRC_DIR/criu/criu" "$BIN.tmp"
mv -f "$BIN.tmp" "$BIN"
echo "$PATCH_ID" >"$DEST/PATCHES"
if ! out="$("$BIN" check 2>&1)"; then
  printf '%s\n' "$out" >&2
  die "$BIN check failed on this kernel"
fi
say "installed $("$BIN" --version | head -1) at $BIN in $(( $(date +%s) - START )) s: $out"
exit 0

__COVE_PATCH__
--- a/criu/namespaces.c
+++ b/criu/namespaces.c
@@ -922,9 +922,27 @@
 	if (chld == 0) {
 		struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
 		struct __user_cap_header_struct hdr;
+		struct ns_desc *descs[] = { &user_ns_desc, &net_ns_desc, &uts_ns_desc, &time_ns_desc, &ipc_ns_desc, &mnt_ns_desc };
+		int fds[ARRAY_SIZE(descs)];
+		unsigned int i;
 		uid_t uid;
 		gid_t gid;
 
+		/*
+		 * Open the namespace files while still privileged: once in the target
+		 * userns, /proc/<pid>/ns/ of a task whose mm belongs to an ancestor userns
+		 * (e.g. it runs an execute-only binary) is not accessible, although its
+		 * namespaces may well belong to the target userns, which setns() checks.
+		 */
+		for (i = 0; i < ARRAY_SIZE(descs); i++) {
+			fds[i] = -1;
+			if (i > 0 && !(root_ns_mask & descs[i]->cflag))
+				continue;
+			fds[i] = open_proc(pid, "ns/%s", descs[i]->str);
+			if (fds[i] < 0)
+				exit(1);
+		}
+
 		uid = host_uid(0);
 		gid = host_gid(0);
 		if (uid == INVALID_ID || gid == INVALID_ID) {
@@ -972,19 +990,9 @@
 		 * namespaces were created from the target userns.
 		 */
 
-		if (switch_ns(pid, &user_ns_desc, NULL))
-			exit(1);
-
-		if ((root_ns_mask & CLONE_NEWNET) && switch_ns(pid, &net_ns_desc, NULL))
-			exit(1);
-		if ((root_ns_mask & CLONE_NEWUTS) && switch_ns(pid, &uts_ns_desc, NULL))
-			exit(1);
-		if ((root_ns_mask & CLONE_NEWTIME) && switch_ns(pid, &time_ns_desc, NULL))
-			exit(1);
-		if ((root_ns_mask & CLONE_NEWIPC) && switch_ns(pid, &ipc_ns_desc, NULL))
-			exit(1);
-		if ((root_ns_mask & CLONE_NEWNS) && switch_ns(pid, &mnt_ns_desc, NULL))
-			exit(1);
+		for (i = 0; i < ARRAY_SIZE(descs); i++)
+			if (fds[i] >= 0 && switch_ns_by_fd(fds[i], descs[i], NULL))
+				exit(1);
 		exit(0);
 	}
 
--- a/criu/sockets.c
+++ b/criu/sockets.c
@@ -637,6 +637,14 @@
 	return 0;
 }
 
+static bool pass_opt_supported(int sk, int name)
+{
+	int v;
+	socklen_t len = sizeof(v);
+
+	return getsockopt(sk, SOL_SOCKET, name, &v, &len) == 0 || errno != EOPNOTSUPP;
+}
+
 int dump_socket_opts(int sk, SkOptsEntry *soe)
 {
 	int ret = 0, val;
@@ -676,13 +684,22 @@
 	soe->so_reuseport = val ? true : false;
 	soe->has_so_reuseport = true;
 
-	ret |= dump_opt(sk, SOL_SOCKET, SO_PASSCRED, &val);
-	soe->has_so_passcred = true;
-	soe->so_passcred = val ? true : false;
-
-	ret |= dump_opt(sk, SOL_SOCKET, SO_PASSSEC, &val);
-	soe->has_so_passsec = true;
-	soe->so_passsec = val ? true : false;
+	/*
+	 * Since Linux 6.16 SO_PASSCRED and SO_PASSSEC exist only for unix, netlink
+	 * and bluetooth sockets: elsewhere getsockopt() fails with EOPNOTSUPP and
+	 * the option is simply off.
+	 */
+	if (pass_opt_supported(sk, SO_PASSCRED)) {
+		ret |= dump_opt(sk, SOL_SOCKET, SO_PASSCRED, &val);
+		soe->has_so_passcred = true;
+		soe->so_passcred = val ? true : false;
+	}
+
+	if (pass_opt_supported(sk, SO_PASSSEC)) {
+		ret |= dump_opt(sk, SOL_SOCKET, SO_PASSSEC, &val);
+		soe->has_so_passsec = true;
+		soe->so_passsec = val ? true : false;
+	}
 
 	ret |= dump_opt(sk, SOL_SOCKET, SO_DONTROUTE, &val);
 	soe->has_so_dontroute = true;
--- a/criu/irmap.c
+++ b/criu/irmap.c
@@ -25,6 +25,7 @@
 #include "stats.h"
 #include "pstree.h"
 #include "cr_options.h"
+#include "mount-v2.h"
 
 #include "protobuf.h"
 #include "images/fsnotify.pb-c.h"
@@ -54,6 +55,44 @@
 
 static struct irmap *cache[IRMAP_CACHE_SIZE];
 
+/*
+ * The scanned tree belongs to the dumped tasks, so it is not trusted: every
+ * lookup stays inside the tasks' root mount (no symlink, no ".." above the
+ * root, no mount crossing: no /proc, no FUSE or other mount of theirs), and
+ * the whole scan of one dump is bounded in entries and path bytes.
+ */
+#ifndef RESOLVE_NO_SYMLINKS
+#define RESOLVE_NO_MAGICLINKS 0x02
+#define RESOLVE_NO_SYMLINKS 0x04
+#define RESOLVE_BENEATH 0x08
+#define RESOLVE_IN_ROOT 0x10
+#endif
+#define IRMAP_MAX_ENTRIES (1 << 18)
+#define IRMAP_MAX_PATH_BYTES (32 << 20)
+static unsigned long irmap_entries, irmap_path_bytes;
+
+static int irmap_openat(int root, const char *path, int flags)
+{
+	struct open_how how = {
+		.flags = flags | O_NOFOLLOW | O_CLOEXEC,
+		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
+	};
+
+	/* "/" (a scan path) is the root itself */
+	return sys_openat2(root, *path ? path : ".", &how, sizeof(how));
+}
+
+static int irmap_fstatat(int root, const char *path, struct stat *st)
+{
+	int fd = irmap_openat(root, path, O_PATH), ret;
+
+	if (fd < 0)
+		return -1;
+	ret = fstat(fd, st);
+	close(fd);
+	return ret;
+}
+
 static struct irmap hints[] = {
 	{
 		.path = "/etc",
@@ -101,7 +140,7 @@
 	mntns_root = get_service_fd(ROOT_FD_OFF);
 
 	pr_debug("Refresh stat for %s\n", i->path);
-	if (fstatat(mntns_root, i->path + 1, &st, AT_SYMLINK_NOFOLLOW)) {
+	if (irmap_fstatat(mntns_root, i->path + 1, &st)) {
 		pr_pwarn("Can't stat %s", i->path);
 		return -1;
 	}
@@ -135,7 +174,7 @@
 	mntns_root = get_service_fd(ROOT_FD_OFF);
 
 	pr_debug("Refilling %s dir\n", t->path);
-	fd = openat(mntns_root, t->path + 1, O_RDONLY);
+	fd = irmap_openat(mntns_root, t->path + 1, O_RDONLY | O_DIRECTORY);
 	if (fd < 0) {
 		pr_pwarn("Can't open %s", t->path);
 		return -1;
@@ -155,16 +194,22 @@
 		if (dir_dots(de))
 			continue;
 
-		nr++;
-		if (xrealloc_safe(&t->kids, nr * sizeof(struct irmap)))
+		irmap_path_bytes += strlen(t->path) + strlen(de->d_name) + 2;
+		if (++irmap_entries > IRMAP_MAX_ENTRIES || irmap_path_bytes > IRMAP_MAX_PATH_BYTES) {
+			pr_err("Scan budget exhausted at %s (%lu entries, %lu path bytes)\n", t->path, irmap_entries,
+			       irmap_path_bytes);
+			goto out_err;
+		}
+
+		if (xrealloc_safe(&t->kids, (nr + 1) * sizeof(struct irmap)))
 			goto out_err;
 
-		k = &t->kids[nr - 1];
+		k = &t->kids[nr++];
 
 		k->kids = NULL;	 /* for xrealloc above */
 		k->ino = 0;	 /* for irmap_update_stat */
 		k->nr_kids = -1; /* for irmap_update_dir */
-		k->path = xsprintf("%s/%s", t->path, de->d_name);
+		k->path = xsprintf("%s/%s", strcmp(t->path, "/") ? t->path : "", de->d_name);
 		if (!k->path)
 			goto out_err;
 	}
@@ -179,7 +224,14 @@
 	return 0;
 
 out_err:
+	/*
+	 * Forget the partial list, paths included: the dir stays unscanned (nr_kids -1), and a later
+	 * scan of it must start from no list, not from a freed one.
+	 */
+	while (nr > 0)
+		xfree(t->kids[--nr].path);
 	xfree(t->kids);
+	t->kids = NULL;
 	closedir(dfd);
 	return -1;
 }
@@ -215,7 +267,7 @@
 	mntns_root = get_service_fd(ROOT_FD_OFF);
 
 	pr_debug("Revalidate stat for %s\n", c->path);
-	if (fstatat(mntns_root, c->path + 1, &st, AT_SYMLINK_NOFOLLOW)) {
+	if (irmap_fstatat(mntns_root, c->path + 1, &st)) {
 		/* File can be (re)moved, so just treat it as invalid */
 		pr_perror("Can't stat %s", c->path);
 		goto invalid;
--- a/criu/files.c
+++ b/criu/files.c
@@ -1329,7 +1329,7 @@
 		}
 	}
 
-	BUG_ON(current->pid->state == TASK_HELPER);
+	/* A helper's fd list is empty (init_pstree_helper()): nothing to open. */
 	ret = open_fdinfos(me);
 
 	if (rsti(me)->fdt)
--- a/criu/pstree.c
+++ b/criu/pstree.c
@@ -237,9 +237,16 @@
 {
 	BUG_ON(!ret->parent);
 	ret->pid->state = TASK_HELPER;
-	rsti(ret)->clone_flags = CLONE_FILES | CLONE_FS;
-	if (shared_fdt_prepare(ret) < 0)
-		return -1;
+	/*
+	 * A helper gets an fd table and fs_struct of its own. Sharing them with
+	 * its parent (CLONE_FILES | CLONE_FS) made the parent's fs_struct shared,
+	 * and the kernel refuses setns(CLONE_NEWNS) to a task whose fs_struct is
+	 * shared (EINVAL): the parent could then not enter the mount namespace to
+	 * restore a path-bound unix socket. A helper restores no files, so it
+	 * starts with an empty fd list (helpers skip prepare_fd_pid()).
+	 */
+	rsti(ret)->clone_flags = 0;
+	INIT_LIST_HEAD(&rsti(ret)->fds);
 	task_entries->nr_helpers++;
 	return 0;
 }
--- a/criu/sk-netlink.c
+++ b/criu/sk-netlink.c
@@ -68,11 +68,35 @@
 	return sk_collect_one(m->ndiag_ino, PF_NETLINK, &sd->sd, ns);
 }
 
-static bool can_dump_netlink_sk(int lfd)
+/*
+ * Cove: queued data on a route or uevent socket that listens to multicast groups is change notifications
+ * of a network namespace or device set the restore does not bring back as it was (the restore makes a new
+ * netns), so they are dropped (the restored socket starts empty, as after an overrun) instead of failing
+ * the dump: a browser's link monitor always has such a socket, and a notification may arrive while it is
+ * frozen. Anything else with data still fails, as before.
+ */
+static bool netlink_queue_droppable(const struct netlink_sk_desc *sk)
+{
+	u32 i;
+
+	if (!sk || (sk->protocol != NETLINK_ROUTE && sk->protocol != NETLINK_KOBJECT_UEVENT))
+		return false;
+	for (i = 0; i < sk->gsize / sizeof(sk->groups[0]); i++)
+		if (sk->groups[i])
+			return true;
+	return false;
+}
+
+static bool can_dump_netlink_sk(int lfd, const struct netlink_sk_desc *sk)
 {
 	int ret;
 
 	ret = fd_has_data(lfd);
+	if (ret == 1 && netlink_queue_droppable(sk)) {
+		pr_warn("Dropping the queued notifications of netlink socket %#x (protocol %d)\n", sk->sd.ino,
+			sk->protocol);
+		return true;
+	}
 	if (ret == 1)
 		pr_err("The socket has data to read\n");
 
@@ -93,7 +117,7 @@
 	ne.id = id;
 	ne.ino = p->stat.st_ino;
 
-	if (!can_dump_netlink_sk(lfd))
+	if (!can_dump_netlink_sk(lfd, sk))
 		goto err;
 
 	if (sk) {
--- a/criu/file-lock.c
+++ b/criu/file-lock.c
@@ -623,9 +623,10 @@
 		pr_info("(flock)flag: %d, type: %d, cmd: %d, pid: %d, fd: %d\n", fle->flag, fle->type, cmd, fle->pid,
 			fle->fd);
 
-		ret = flock(fle->fd, cmd);
+		/* Cove: never wait for a holder outside the tree (a shared file): the restore fails instead. */
+		ret = flock(fle->fd, cmd | LOCK_NB);
 		if (ret < 0) {
-			pr_err("Can not set flock!\n");
+			pr_perror("Can not set flock");
 			goto err;
 		}
 	} else if (fle->flag & FL_POSIX) {
@@ -642,9 +643,9 @@
 			"start: %8" PRIx64 ", len: %8" PRIx64 "\n",
 			fle->flag, fle->type, fle->pid, fle->fd, fle->start, fle->len);
 
-		ret = fcntl(fle->fd, F_SETLKW, &flk);
+		ret = fcntl(fle->fd, F_SETLK, &flk);
 		if (ret < 0) {
-			pr_err("Can not set posix lock!\n");
+			pr_perror("Can not set posix lock");
 			goto err;
 		}
 	} else if (fle->flag & FL_OFD) {
--- a/criu/uffd.c
+++ b/criu/uffd.c
@@ -17,6 +17,11 @@
 
 #include "linux/userfaultfd.h"
 
+/* linux/userfaultfd.h of Linux >= 6.1; criu 4.1.1 carries an older copy */
+#ifndef USERFAULTFD_IOC_NEW
+#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
+#endif
+
 #include "int.h"
 #include "page.h"
 #include "criu-log.h"
@@ -109,6 +114,8 @@
 static struct epoll_rfd lazy_sk_rfd;
 /* socket for communication with lazy-pages daemon */
 static int lazy_pages_sk_id = -1;
+/* /dev/userfaultfd opened by criu itself (root, the host's namespaces), for tasks restored into a user namespace */
+static int uffd_dev_id = -1;
 
 static int handle_uffd_event(struct epoll_rfd *lpfd);
 
@@ -264,6 +271,20 @@
 	int uffd;
 
 	uffd = syscall(SYS_userfaultfd, flags);
+	if (uffd == -1 && errno == EPERM && uffd_dev_id >= 0) {
+		/*
+		 * A task restored into a user namespace lacks CAP_SYS_PTRACE in the initial one, which the syscall
+		 * wants when vm.unprivileged_userfaultfd is 0. USERFAULTFD_IOC_NEW on the device criu opened makes the
+		 * same descriptor for the calling task's mm; the device's descriptor is closed at once, so the
+		 * restored task never keeps a way to make userfaultfds of its own.
+		 */
+		int dev = fdstore_get(uffd_dev_id);
+
+		if (dev >= 0) {
+			uffd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
+			close(dev);
+		}
+	}
 	if (uffd == -1) {
 		pr_info("Lazy pages are not available: %s\n", strerror(errno));
 		if (err)
@@ -326,7 +347,7 @@
 
 int prepare_lazy_pages_socket(void)
 {
-	int fd, len, ret = -1;
+	int fd, dev, len, ret = -1;
 	struct sockaddr_un sun;
 
 	if (!opts.lazy_pages)
@@ -356,6 +377,17 @@
 		goto out;
 	}
 
+	/* Optional: only tasks restored into a user namespace need it (uffd_open). */
+	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
+	if (dev >= 0) {
+		uffd_dev_id = fdstore_add(dev);
+		close(dev);
+		if (uffd_dev_id < 0) {
+			pr_perror("Can't add /dev/userfaultfd to fdstore");
+			goto out;
+		}
+	}
+
 	ret = 0;
 out:
 	close(fd);
--- a/criu/uffd.c
+++ b/criu/uffd.c
@@ -71,6 +71,8 @@
  */
 #define DEFAULT_XFER_LEN (64 << 10)
 #define MAX_XFER_LEN	 (4 << 20)
+/* Cove: pages a fault brings, the faulting one first (64 KiB, the kernel's own fault-around for files). */
+#define FAULT_AROUND_PAGES 16
 
 static mutex_t *lazy_sock_mutex;
 
@@ -1199,7 +1201,15 @@
 	if (!iov)
 		return uffd_zero(lpi, address, 1);
 
-	iov = extract_range(iov, address, address + PAGE_SIZE);
+	/*
+	 * Cove: a task that faults is running now, so its remaining pages are the next the background transfer
+	 * copies (it went task by task in the order the tasks registered, so a small daemon could wait for all of
+	 * a large worker's memory, one fault at a time). And a fault brings the pages after it in its range too
+	 * (up to FAULT_AROUND_PAGES): a heap is touched in runs, and each fault is a round trip.
+	 */
+	list_move(&lpi->l, &lpis);
+
+	iov = extract_range(iov, address, min(iov->end, (unsigned long)(address + FAULT_AROUND_PAGES * PAGE_SIZE)));
 	if (!iov)
 		return -1;
 
@@ -1207,7 +1217,7 @@
 
 	update_xfer_len(lpi, true);
 
-	ret = uffd_handle_pages(lpi, iov->img_start, 1, PR_ASYNC | PR_ASAP);
+	ret = uffd_handle_pages(lpi, iov->img_start, (iov->end - iov->start) / PAGE_SIZE, PR_ASYNC | PR_ASAP);
 	if (ret < 0) {
 		lp_err(lpi, "Error during regular page copy\n");
 		return -1;
--- a/criu/filesystems.c
+++ b/criu/filesystems.c
@@ -3,6 +3,10 @@
 #include <string.h>
 #include <fcntl.h>
 #include <sys/mount.h>
+#include <sys/stat.h>
+#include <dirent.h>
+#include <stdlib.h>
+#include <unistd.h>
 
 #include "common/config.h"
 #include "int.h"
@@ -376,9 +380,89 @@
 #define binfmt_misc_parse_or_collect NULL
 #endif
 
+/*
+ * Cove: an empty tmpfs whose root has the mode and owner its mount options give it (a masked path such as
+ * /proc/acpi, an unused /dev/shm) is dumped as this constant, an empty gzip'd tar, without running tar and
+ * gzip (two programs per mount, on every dump); a restore that finds it runs nothing, the mount alone
+ * recreating that tmpfs. Any other criu extracts it as the empty archive it is.
+ */
+static const unsigned char empty_tmpfs_tgz[] = {
+	0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xed, 0xc1, 0x01, 0x0d, 0x00,
+	0x00, 0x00, 0xc2, 0xa0, 0xf7, 0x4f, 0x6d, 0x0e, 0x37, 0xa0, 0x00, 0x00, 0x00, 0x00, 0x00,
+	0x00, 0x00, 0x00, 0x00, 0x80, 0x37, 0x03, 0x9a, 0xde, 0x1d, 0x27, 0x00, 0x28, 0x00, 0x00,
+};
+
+/* The value of `key` (e.g. "mode=") among the comma-separated mount options, if it is there. */
+static void tmpfs_option(const char *opts, const char *key, unsigned long *val, int base)
+{
+	size_t n = strlen(key);
+
+	while (opts && *opts) {
+		if (!strncmp(opts, key, n)) {
+			*val = strtoul(opts + n, NULL, base);
+			return;
+		}
+		opts = strchr(opts, ',');
+		if (opts)
+			opts++;
+	}
+}
+
+/* Whether the tmpfs open at `fd` holds nothing and its root is what mounting it with its options gives. */
+static bool tmpfs_as_mounted(struct mount_info *pm, int fd)
+{
+	/* tmpfs shows mode, uid and gid only when they are not the default. */
+	unsigned long mode = 01777, uid = 0, gid = 0;
+	struct dirent *de;
+	struct stat st;
+	bool empty = true;
+	DIR *d;
+	int dfd;
+
+	if (fstat(fd, &st) || !S_ISDIR(st.st_mode))
+		return false;
+	tmpfs_option(pm->options, "mode=", &mode, 8);
+	tmpfs_option(pm->options, "uid=", &uid, 10);
+	tmpfs_option(pm->options, "gid=", &gid, 10);
+	/* Compared in the view the options were read in (the tree's user namespace; an unmapped owner never matches). */
+	if ((st.st_mode & 07777) != mode || userns_uid(st.st_uid) != uid || userns_gid(st.st_gid) != gid)
+		return false;
+
+	/* A description of its own: reading the directory must not move tar's. */
+	dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
+	if (dfd < 0)
+		return false;
+	d = fdopendir(dfd);
+	if (!d) {
+		close(dfd);
+		return false;
+	}
+	while ((de = readdir(d)) != NULL) {
+		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
+			empty = false;
+			break;
+		}
+	}
+	closedir(d);
+	return empty;
+}
+
+/* Whether a tmpfs image is the empty one tmpfs_dump writes for a tmpfs as mounted. */
+static bool tmpfs_image_empty(struct cr_img *img)
+{
+	unsigned char buf[sizeof(empty_tmpfs_tgz)];
+	struct stat st;
+
+	if (fstat(img_raw_fd(img), &st) || st.st_size != sizeof(buf))
+		return false;
+	if (pread(img_raw_fd(img), buf, sizeof(buf), 0) != sizeof(buf))
+		return false;
+	return !memcmp(buf, empty_tmpfs_tgz, sizeof(buf));
+}
+
 static int tmpfs_dump(struct mount_info *pm)
 {
-	int ret = -1, fd = -1, userns_pid = -1;
+	int ret = -1, fd = -1, userns_pid = -1, raw;
 	struct cr_img *img;
 	int tmp_fds[3], ntmp_fds = 0, i;
 
@@ -386,6 +470,20 @@
 	if (fd < 0)
 		return MNT_UNREACHABLE;
 
+	if (tmpfs_as_mounted(pm, fd)) {
+		img = open_image(CR_FD_TMPFS_DEV, O_DUMP, pm->s_dev);
+		if (!img)
+			goto out;
+		/* A raw image is opened on its first use: img_raw_fd, never the bfd behind it. */
+		raw = img_raw_fd(img);
+		if (raw >= 0 && write_all(raw, empty_tmpfs_tgz, sizeof(empty_tmpfs_tgz)) == sizeof(empty_tmpfs_tgz))
+			ret = 0;
+		else
+			pr_perror("Can't write the empty tmpfs image");
+		close_image(img);
+		goto out;
+	}
+
 	/*
 	 * fd should not be one of standard descriptors, because
 	 * cr_system_userns will override them.
@@ -449,6 +547,10 @@
 		close_image(img);
 		return -1;
 	}
+	if (tmpfs_image_empty(img)) {
+		close_image(img);
+		return 0;
+	}
 
 	ret = cr_system(img_raw_fd(img), -1, -1, "tar",
 			(char *[]){ "tar", "--extract", "--gzip", "--no-unquote", "--no-wildcards", "--directory",
--- a/criu/sk-queue.c
+++ b/criu/sk-queue.c
@@ -8,6 +8,7 @@
 #include <sys/types.h>
 #include <sys/stat.h>
 #include <sys/socket.h>
+#include <sys/ioctl.h>
 
 #include "common/list.h"
 #include "imgset.h"
@@ -163,7 +164,7 @@
 int dump_sk_queue(int sock_fd, int sock_id)
 {
 	SkPacketEntry pe = SK_PACKET_ENTRY__INIT;
-	int ret, size, orig_peek_off;
+	int ret, size, orig_peek_off, type = 0, inq = 0;
 	void *data;
 	socklen_t tmp;
 
@@ -192,6 +193,21 @@
 	size -= 32;
 
 	/*
+	 * A peek of a stream socket glues skbs together, and a peek that ends
+	 * inside an skb carrying SCM_RIGHTS gets its fds; so does the next peek,
+	 * which starts inside the same skb. With a buffer smaller than the queue
+	 * (the socket's SO_SNDBUF, not its peer's) the dump took the same fds two
+	 * or more times, and the restored queue delivered them so: a receiver that
+	 * pairs fds with messages (Firefox's IPC) read the wrong ones. Peeking the
+	 * whole queue at once, every peek ends after an skb with fds or at the end
+	 * of the queue (Cove).
+	 */
+	tmp = sizeof(type);
+	if (!getsockopt(sock_fd, SOL_SOCKET, SO_TYPE, &type, &tmp) && type == SOCK_STREAM &&
+	    !ioctl(sock_fd, FIONREAD, &inq) && inq > size)
+		size = inq;
+
+	/*
 	 * Allocate data for a stream.
 	 */
 	data = xmalloc(size);
--- a/criu/sk-unix.c
+++ b/criu/sk-unix.c
@@ -1091,9 +1091,20 @@
 	 * Make this fle fake, so that files collecting engine
 	 * closes them at the end.
 	 */
-	return collect_fd_to(vpid(owner), e, rsti(owner), tgt, true, force_master);
+	fle = collect_fd_to(vpid(owner), e, rsti(owner), tgt, true, force_master);
+	/*
+	 * A file a queue passes is received from whoever restores it, never
+	 * restored by the queue's task instead: becoming its master (the first
+	 * entry, by pid) could take a socket away from the task its interconnected
+	 * pair is restored by (Cove).
+	 */
+	if (fle && !force_master && !list_is_singular(&tgt->fd_info_head))
+		list_move_tail(&fle->desc_list, &tgt->fd_info_head);
+	return fle;
 }
 
+static int interconnected_pair(struct unix_sk_info *ui, struct unix_sk_info *peer);
+
 int unix_note_scm_rights(int id_for, uint32_t *file_ids, int *fds, int n_ids)
 {
 	struct unix_sk_info *ui;
@@ -1106,6 +1117,16 @@
 		return -1;
 	}
 
+	/*
+	 * Both queues of an interconnected pair (a socketpair whose ends live in
+	 * two tasks) are sent by the one task that restores the pair. Pair it up
+	 * now, as fixup_unix_peer() would later, so that the files passed below
+	 * are given to that task and not to the queuer's own (Cove).
+	 */
+	if (ui->peer && ui->peer != ui && ui->peer->peer == ui && !(ui->flags & (USK_PAIR_MASTER | USK_PAIR_SLAVE)) &&
+	    interconnected_pair(ui, ui->peer))
+		return -1;
+
 	pr_info("Found queuer for %#x -> %#x\n", id_for, ui->ue->id);
 	/*
 	 * This is the task that will restore this socket
@@ -1673,8 +1694,12 @@
 	fle_peer = file_master(&peer->d);
 	BUG_ON(fle->task != fle_peer->task); /* See interconnected_pair() */
 
+	/*
+	 * Not yet: come back once the passed files are open. Returning 0 here
+	 * called the pair restored, and its queues were never sent (Cove).
+	 */
 	if (chk_restored_scms(ui) || chk_restored_scms(peer))
-		return 0;
+		return 1;
 
 	if (restore_unix_queue(fle->fe->fd, peer))
 		return -1;
diff --git a/criu/uffd.c b/criu/uffd.c
index cd35143..b83d15b 100644
--- a/criu/uffd.c
+++ b/criu/uffd.c
@@ -347,6 +347,45 @@ err:
 	return -1;
 }
 
+/*
+ * The daemon may be started together with the restore, so it may not listen yet: a missing socket (ENOENT)
+ * or one nobody listens on yet (ECONNREFUSED) is retried every millisecond for at most
+ * LAZY_PAGES_CONNECT_MS; anything else, or the deadline, fails the restore.
+ */
+#define LAZY_PAGES_CONNECT_MS 10000
+
+static long long monotonic_ms(void)
+{
+	struct timespec ts;
+
+	clock_gettime(CLOCK_MONOTONIC, &ts);
+	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
+}
+
+static int connect_lazy_pages(struct sockaddr_un *sun, int len)
+{
+	long long deadline = monotonic_ms() + LAZY_PAGES_CONNECT_MS;
+	struct timespec tick = { 0, 1000000 };
+	int fd;
+
+	while (1) {
+		fd = socket(AF_UNIX, SOCK_STREAM, 0);
+		if (fd < 0) {
+			pr_perror("Can't create a socket for the lazy-pages daemon");
+			return -1;
+		}
+		if (connect(fd, (struct sockaddr *)sun, len) == 0)
+			return fd;
+		if ((errno != ENOENT && errno != ECONNREFUSED) || monotonic_ms() >= deadline) {
+			pr_perror("connect to %s failed", sun->sun_path);
+			close(fd);
+			return -1;
+		}
+		close(fd);
+		nanosleep(&tick, NULL);
+	}
+}
+
 int prepare_lazy_pages_socket(void)
 {
 	int fd, dev, len, ret = -1;
@@ -364,14 +403,10 @@ int prepare_lazy_pages_socket(void)
 
 	mutex_init(lazy_sock_mutex);
 
-	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0)
-		return -1;
-
 	len = offsetof(struct sockaddr_un, sun_path) + strlen(sun.sun_path);
-	if (connect(fd, (struct sockaddr *)&sun, len) < 0) {
-		pr_perror("connect to %s failed", sun.sun_path);
-		goto out;
-	}
+	fd = connect_lazy_pages(&sun, len);
+	if (fd < 0)
+		return -1;
 
 	lazy_pages_sk_id = fdstore_add(fd);
 	if (lazy_pages_sk_id < 0) {
diff --git a/criu/action-scripts.c b/criu/action-scripts.c
index 6f79001..183c800 100644
--- a/criu/action-scripts.c
+++ b/criu/action-scripts.c
@@ -1,7 +1,9 @@
 #include <unistd.h>
 #include <stdio.h>
 #include <limits.h>
+#include <stdbool.h>
 #include <stdlib.h>
+#include <string.h>
 
 #include "cr_options.h"
 #include "common/list.h"
@@ -44,6 +46,26 @@ enum { SCRIPTS_NONE, SCRIPTS_SHELL, SCRIPTS_RPC };
 static int scripts_mode = SCRIPTS_NONE;
 static LIST_HEAD(scripts);
 
+/*
+ * CRIU_SCRIPT_ACTIONS, a comma-separated list of action names, limits the shell scripts to those actions when set:
+ * every other action forks and execs each script only for it to exit at once (~1.5 ms each, six times a restore).
+ */
+static bool script_action_wanted(const char *action)
+{
+	const char *list = getenv("CRIU_SCRIPT_ACTIONS");
+	size_t len = strlen(action);
+	const char *p, *end;
+
+	if (!list)
+		return true;
+	for (p = list; *p; p = *end ? end + 1 : end) {
+		end = strchrnul(p, ',');
+		if ((size_t)(end - p) == len && !strncmp(p, action, len))
+			return true;
+	}
+	return false;
+}
+
 static int run_shell_scripts(const char *action)
 {
 	int retval = 0;
@@ -56,6 +78,11 @@ static int run_shell_scripts(const char *action)
 	if (list_empty(&scripts))
 		return 0;
 
+	if (!script_action_wanted(action)) {
+		pr_debug("\tnot run (CRIU_SCRIPT_ACTIONS)\n");
+		return 0;
+	}
+
 	if (setenv("CRTOOLS_SCRIPT_ACTION", action, 1)) {
 		pr_perror("Can't set CRTOOLS_SCRIPT_ACTION=%s", action);
 		return -1;
