#!/bin/sh
# Xvfb as @e2b/desktop runs it on every Sandbox.create(). The desktop template pre-starts one with the SDK's default
# arguments (/usr/local/lib/cove-desktop/start). Same arguments and still running: that server is what was asked
# for, so this returns at once. Anything else (another resolution, dpi or display): the pre-started desktop is
# stopped (its session ends with its X server) and the real Xvfb starts as asked, so the SDK's options are honoured.
# The lock is held until the new server answers, so a startxfce4 right after waits for it.
M=/tmp/.cove-desktop
exec 9>>"$M.lock"
flock 9
if [ -f "$M/args" ]; then
  pid=$(cat "$M/xvfb.pid" 2>/dev/null)
  session=$(cat "$M/session.pid" 2>/dev/null)
  if [ "$(cat "$M/args")" = "$*" ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then exit 0; fi
  rm -rf "$M"
  # Until both are gone (at most 5 s): the SDK's own check must not find the old session's processes.
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  i=0
  alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
  while [ "$i" -lt 100 ] && { alive "$pid" || alive "$session"; }; do i=$((i + 1)); sleep 0.05; done
fi
# The server replaces this shell (same pid, so `pgrep -x Xvfb` counts one); a helper keeps the lock until it answers
# (at most 10 s) and exits, which releases it. The helper is a new `sh`, not a fork named Xvfb.
sh -c 'i=0; while [ "$i" -lt 200 ] && kill -0 "$2" 2>/dev/null && ! xdpyinfo -display "$1" >/dev/null 2>&1; do
  i=$((i + 1)); sleep 0.05; done' cove-desktop-wait "$1" "$$" &
exec /usr/bin/Xvfb "$@" 9>&-
