#!/bin/sh
# The desktop template's start command (run as `user` before a slot is handed out): starts the desktop exactly as
# @e2b/desktop's Sandbox.create() does with its defaults (`Xvfb :0 -ac -screen 0 1024x768x24 -retro -dpi 96
# -nolisten tcp -nolisten unix`, then startxfce4), so a create finds it up. /usr/local/bin/Xvfb and startxfce4 then
# treat the SDK's own calls as no-ops when they ask for this desktop, or replace it when they ask for another.
set -u
M=/tmp/.cove-desktop
export DISPLAY=:0
ARGS=":0 -ac -screen 0 1024x768x24 -retro -dpi 96 -nolisten tcp -nolisten unix"
exec 9>>"$M.lock"
flock 9
rm -rf "$M" && mkdir -m 0700 "$M" || exit 1
# shellcheck disable=SC2086 # ARGS is split on purpose, as the SDK's command line is
/usr/bin/Xvfb $ARGS >/tmp/cove-desktop-xvfb.log 2>&1 9>&- &
echo $! >"$M/xvfb.pid"
echo $$ >"$M/session.pid"
i=0
until xdpyinfo -display :0 >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -le 200 ] && kill -0 "$(cat "$M/xvfb.pid")" 2>/dev/null || exit 1
  sleep 0.05
done
printf '%s\n' "$ARGS" >"$M/args"
flock -u 9
exec 9>&-
exec /usr/bin/startxfce4 >/tmp/cove-desktop-xfce.log 2>&1
