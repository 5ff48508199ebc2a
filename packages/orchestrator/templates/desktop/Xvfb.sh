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
  if [ "$(cat "$M/args")" = "$*" ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then exit 0; fi
  rm -rf "$M"
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do i=$((i + 1)); sleep 0.05; done
  fi
fi
/usr/bin/Xvfb "$@" 9>&- &
xpid=$!
i=0
while [ "$i" -lt 200 ] && kill -0 "$xpid" 2>/dev/null && ! xdpyinfo -display "$1" >/dev/null 2>&1; do
  i=$((i + 1)); sleep 0.05
done
flock -u 9
exec 9>&-
wait "$xpid"
