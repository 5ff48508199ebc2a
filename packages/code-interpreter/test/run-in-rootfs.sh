#!/bin/sh
# Runs the built guest directory in a code-interpreter rootfs without the platform: private
# mount and pid namespaces, the rootfs under a throwaway overlay (never written), the guest
# mounted read-only at /opt/cove/code-interpreter and this machine's Node at /opt/cove/bin/node,
# then `start` as uid 1000 in /home/user. It shares the host network, so it serves
# localhost:49999 (what the SDK's debug mode talks to). Stop it with SIGKILL to this process
# (unshare ignores SIGTERM). Usage: run-in-rootfs.sh ROOTFS GUEST SCRATCH
set -eu
rootfs=$1 guest=$2 scratch=$3
node=$(readlink -f "$(command -v node)")
exec unshare --mount --pid --fork --kill-child --propagation private sh -eu -c '
  rootfs=$1 guest=$2 scratch=$3 node=$4
  mkdir -p "$scratch/upper" "$scratch/work" "$scratch/root"
  mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
  r=$scratch/root
  mkdir -p "$r/opt/cove/code-interpreter" "$r/opt/cove/bin" "$r/proc" "$r/dev" "$r/tmp"
  touch "$r/opt/cove/bin/node"
  mount --bind "$guest" "$r/opt/cove/code-interpreter"
  mount -o remount,bind,ro "$r/opt/cove/code-interpreter"
  mount --bind "$node" "$r/opt/cove/bin/node"
  mount -t proc proc "$r/proc"
  mount --rbind /dev "$r/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
  # The rootfs is stored id-shifted for the sandboxes'"'"' user namespace; here, without one, the
  # home is given (in the throwaway overlay) to uid 1000, as it is the user'"'"'s in a sandbox.
  chown 1000:1000 "$r/home/user"
  cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  # Not exec: this shell stays pid 1 of the namespace and keeps --kill-child'"'"'s death signal
  # (setpriv'"'"'s uid change would drop it), so SIGKILL to unshare ends every process in here.
  # The server'"'"'s tunables a test sets (output bound, keep-alive period) pass; nothing else of the host'"'"'s env does.
  chroot "$r" /usr/bin/setpriv --reuid=1000 --regid=1000 --init-groups \
    /usr/bin/env -i HOME=/home/user USER=user LOGNAME=user PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    $(env | grep -E "^COVE_CI_(MAX_OUTPUT_BYTES|KEEPALIVE_S)=[0-9.]+$") \
    sh -c "cd /home/user && exec /opt/cove/code-interpreter/start" &
  wait $!
' sh "$rootfs" "$guest" "$scratch" "$node"
