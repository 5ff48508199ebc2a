#!/bin/sh
# x11vnc as @e2b/desktop runs it: `x11vnc -bg ...` to start the stream, `pgrep -x x11vnc` to see it, `pkill x11vnc`
# to stop it. x11vnc 0.9.16 cleans up from inside its SIGTERM handler; when the signal lands while it holds a lock
# (often, with a viewer connected) it deadlocks in a futex wait and never exits, so the stream stays "running" and the
# next start() refuses. With -bg the server runs instead under a supervisor named x11vnc: on SIGTERM it gives the
# server 2 s to clean up as usual, then SIGKILLs it. The server's own name (x11vnc-server) still matches `pkill x11vnc`
# but not `pgrep -x x11vnc`, so the SDK sees one process. Without -bg (e.g. -storepasswd) this is x11vnc itself.
SERVER=/usr/local/lib/cove-desktop/x11vnc-server

if [ -n "$COVE_X11VNC_DIR" ]; then
  # The supervisor, in a session of its own as -bg's daemon is. Its server's stdout goes to a file the starter reads.
  dir=$COVE_X11VNC_DIR
  unset COVE_X11VNC_DIR
  "$SERVER" "$@" >"$dir/out" </dev/null &
  pid=$!
  # Exited but not yet reaped counts as gone: `kill -0` would still succeed on the zombie.
  running() { [ -r "/proc/$pid/stat" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ]; }
  # The starter may still be waiting (the server ended before it listened): it reads the code from here.
  finish() {
    echo "$1" >"$dir/code.tmp" 2>/dev/null && mv "$dir/code.tmp" "$dir/code" 2>/dev/null
    exit "$1"
  }
  stop() {
    kill -TERM "$pid" 2>/dev/null
    i=0
    while [ "$i" -lt 40 ] && running; do i=$((i + 1)); sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid"
    finish 143
  }
  trap stop TERM INT HUP
  wait "$pid"
  finish "$?"
fi

bg=0
for a; do [ "$a" = -bg ] && bg=1; done
[ "$bg" = 1 ] || exec "$SERVER" "$@"
for a; do
  shift
  [ "$a" = -bg ] || set -- "$@" "$a"
done
dir=$(mktemp -d /tmp/.cove-x11vnc.XXXXXX) || exit 1
COVE_X11VNC_DIR=$dir setsid -f "$0" "$@" </dev/null >/dev/null
# As -bg does: return once the server listens (it prints PORT=<n>), or with its exit code if it ended before that.
# The server keeps writing to its stdout after the directory is gone (the file is unlinked, not closed).
while :; do
  if grep -q '^PORT=' "$dir/out" 2>/dev/null; then
    cat "$dir/out"
    rm -rf "$dir"
    exit 0
  fi
  if [ -f "$dir/code" ]; then
    code=$(cat "$dir/code")
    cat "$dir/out" 2>/dev/null
    rm -rf "$dir"
    exit "${code:-1}"
  fi
  sleep 0.05
done
