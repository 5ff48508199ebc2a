// Shell scripts the build runs inside build sandboxes (as root). Values come in as positional arguments
// (`bash -c SCRIPT cove-build ARG…`), never spliced into the script text, so no quoting can break out.

/** $1 dir, $2 user: mkdir -p, and the directories it created belong to the user (E2B's WORKDIR). */
export const WORKDIR_SCRIPT = `set -eu
d=$1; u=$2; p=$d; first=
while [ ! -e "$p" ] && [ ! -L "$p" ]; do first=$p; p=$(dirname "$p"); done
mkdir -p "$d"
if [ -n "$first" ] && [ "$u" != root ]; then chown -R "$u:" "$first"; fi`;

/** $1 name, $2 "true" to add to sudoers: useradd --create-home --shell /bin/bash when missing (E2B's USER). */
export const USER_SCRIPT = `set -eu
n=$1
if ! id -u "$n" >/dev/null 2>&1; then
  if command -v useradd >/dev/null 2>&1; then useradd --create-home --shell /bin/bash "$n"
  else adduser -D -s /bin/sh "$n"; fi
fi
if [ "\${2:-}" = true ]; then
  if getent group sudo >/dev/null 2>&1; then usermod -aG sudo "$n" 2>/dev/null || addgroup "$n" sudo 2>/dev/null || true; fi
  passwd -d "$n" >/dev/null 2>&1 || true
  grep -qs "^$n ALL=(ALL:ALL) NOPASSWD: ALL" /etc/sudoers || echo "$n ALL=(ALL:ALL) NOPASSWD: ALL" >> /etc/sudoers
fi`;

/** The user E2B sandboxes expect: uid 1000 when free, home /home/user, passwordless sudo when sudo exists. */
export const FINALIZE_USER_SCRIPT = `set -eu
if ! id -u user >/dev/null 2>&1; then
  if command -v useradd >/dev/null 2>&1; then
    if getent passwd 1000 >/dev/null 2>&1; then useradd --create-home --shell /bin/bash user
    else useradd --uid 1000 --create-home --shell /bin/bash user; fi
  else adduser -D -u 1000 -s /bin/sh user; fi
fi
if command -v sudo >/dev/null 2>&1; then
  grep -qs '^user ALL=(ALL:ALL) NOPASSWD: ALL' /etc/sudoers || echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' >> /etc/sudoers
fi`;

/**
 * COPY with Docker semantics. $1 tar (uploaded), $2 source base inside it ('' = its root), $3 "1" when the
 * source was a glob, $4 absolute destination, $5 "1" when the destination ended in '/', $6 owner
 * (user[:group]), $7 mode ('' = keep). A directory (or a glob's matches) merges into the destination; a file
 * replaces the destination, or lands inside it when it ends in '/' or is a directory. Owner and mode are
 * applied to the copied items before they move, as E2B does; pre-existing directories keep theirs.
 */
export const COPY_SCRIPT = `set -eu
tarf=$1; base=$2; glob=$3; dest=$4; into=$5; owner=$6; mode=$7
work=$(mktemp -d /tmp/cove-copy.XXXXXX)
trap 'rm -rf "$work" "$tarf"' EXIT
tar -x --no-same-owner -f "$tarf" -C "$work"
src=$work\${base:+/$base}
if [ ! -e "$src" ] && [ ! -L "$src" ]; then echo "COPY: $base is not in the uploaded files" >&2; exit 1; fi
case "$owner" in *:*) ;; *) owner="$owner:" ;; esac
mkdest() {
  p=$1; first=
  while [ ! -e "$p" ] && [ ! -L "$p" ]; do first=$p; p=$(dirname "$p"); done
  mkdir -p "$1"
  if [ -n "$first" ]; then chown -R "$owner" "$first"; fi
}
if [ -d "$src" ] && [ ! -L "$src" ]; then
  chown -R "$owner" "$src"
  if [ -n "$mode" ]; then find "$src" -mindepth 1 ! -type l -exec chmod "$mode" {} +; fi
  mkdest "$dest"
  find "$src" -mindepth 1 -maxdepth 1 -exec cp -a --remove-destination {} "$dest/" \\;
else
  chown -h "$owner" "$src"
  if [ -n "$mode" ] && [ ! -L "$src" ]; then chmod "$mode" "$src"; fi
  if [ "$into" = 1 ] || { [ -d "$dest" ] && [ ! -L "$dest" ]; }; then
    mkdest "$dest"; target="$dest/$(basename "$src")"
  else
    mkdest "$(dirname "$dest")"; target=$dest
  fi
  cp -a --remove-destination "$src" "$target"
fi
sync`;

/** Runs a script as `bash -c` with positional arguments. */
export function scriptArgv(script: string, args: string[]): string[] {
  return ['/bin/bash', '-c', script, 'cove-build', ...args];
}

/** E2B/doublestar SplitPattern: the path before the first segment with a glob character. */
export function copySourceBase(src: string): { base: string; glob: boolean } {
  const parts = src.split('/').filter((p) => p !== '' && p !== '.');
  const i = parts.findIndex((p) => /[*?[{]/.test(p));
  const kept = i === -1 ? parts : parts.slice(0, i);
  // `a/../b` stays inside the context (validated), and tar paths are normalised the same way.
  const out: string[] = [];
  for (const p of kept) {
    if (p === '..') out.pop();
    else out.push(p);
  }
  return { base: out.join('/'), glob: i !== -1 };
}
