#!/bin/sh
# startxfce4 as @e2b/desktop runs it after Xvfb on every Sandbox.create(): when the desktop the template pre-started
# still serves this DISPLAY, its session is the one wanted and this returns; otherwise Xfce's own startxfce4 runs.
# Taking the lock first waits out an Xvfb restart in progress (/usr/local/bin/Xvfb).
M=/tmp/.cove-desktop
exec 9>>"$M.lock"
flock 9
exec 9>&-
if [ -f "$M/args" ] && [ "${DISPLAY:-}" = "$(cut -d' ' -f1 "$M/args")" ] && pgrep -u "$(id -u)" -x xfce4-session >/dev/null; then
  exit 0
fi
exec /usr/bin/startxfce4 "$@"
