// The built-in `code-interpreter-v1` template as the node runs it (docs/decisions.md, "code-interpreter-v1 on the
// node"): its rootfs is built from its recipe like `base`; its guest dir (the in-sandbox server, package
// @cove/code-interpreter) is lent read-only at GUEST_MOUNT; its server is started as `user` in /home/user and
// waited for before a slot is handed out. The one place the start and ready commands are defined: at merge they
// come from @cove/code-interpreter (START_CMD, READY_CMD, guestDir()); the wrapper that drops root is the node's.

import { CODE_INTERPRETER_TEMPLATE_ID, DESKTOP_TEMPLATE_ID } from '@cove/contracts/sandbox';
import { GUEST_MOUNT, READY_CMD, START_CMD as START_CMD_INNER, guestDir } from '@cove/code-interpreter';

export { GUEST_MOUNT, READY_CMD };

/** packages/code-interpreter/dist/guest (the package's own build output). */
export function defaultGuestDir(): string {
  return guestDir();
}

/**
 * What a slot runs (bash -l -c, in the background through envd). The server must run as `user` in /home/user
 * whoever starts it: a user template built FROM code-interpreter-v1 inherits this command but may end as root
 * (E2B builds start as root), so root drops to `user` itself (runuser, util-linux, in every Debian rootfs).
 */
export const START_CMD =
  `cd /home/user && if [ "$(id -u)" = 0 ]; then exec runuser -u user -- ${START_CMD_INNER}; else exec ${START_CMD_INNER}; fi`;

/** Who a sandbox of a built-in template runs as, and where: envd's /init defaults (E2B's own templates' user). */
export const BUILTIN_USER = 'user';
export const BUILTIN_WORKDIR = '/home/user';

/** What a slot of a template runs before it is handed out (a build manifest carries the same fields). */
export interface StartSpec {
  templateId: string;
  /** The user template's build; null for a built-in template. */
  buildId: string | null;
  env: Record<string, string>;
  user: string;
  workdir: string;
  startCmd: string | null;
  readyCmd: string | null;
}

/**
 * The `desktop` template (issue 18, docs/desktop.md) has nothing lent from the host: its start script is part of its
 * rootfs (templates/desktop/start.sh). It starts Xvfb and Xfce as @e2b/desktop's create would with its defaults, so
 * a pooled slot is handed out with the desktop up. It runs as root first: D-Bus (dbus-launch, which Xfce needs)
 * refuses to start without a machine id, mmdebstrap leaves none, and one made here is the sandbox's own (one baked
 * into the rootfs would be every sandbox's); then it drops to `user`, as code-interpreter-v1's does.
 */
const DESKTOP_START = '/usr/local/lib/cove-desktop/start';
export const DESKTOP_START_CMD =
  `cd /home/user && if [ "$(id -u)" = 0 ]; then dbus-uuidgen --ensure && exec runuser -u user -- ${DESKTOP_START}; else exec ${DESKTOP_START}; fi`;
/** The SDK's own check that Xfce is up (its startXfce4), after the pre-start finished its Xvfb step. */
export const DESKTOP_READY_CMD =
  'test -f /tmp/.cove-desktop/args && pgrep -x xfce4-session >/dev/null && pgrep -x xfwm4 >/dev/null && pgrep -x xfdesktop >/dev/null';

/** The start spec of a built-in template, or null when it has none (`base`). */
export function builtinStartOf(templateId: string): StartSpec | null {
  if (templateId === CODE_INTERPRETER_TEMPLATE_ID) {
    return { templateId, buildId: null, env: {}, user: BUILTIN_USER, workdir: BUILTIN_WORKDIR, startCmd: START_CMD, readyCmd: READY_CMD };
  }
  if (templateId === DESKTOP_TEMPLATE_ID) {
    return { templateId, buildId: null, env: {}, user: 'root', workdir: BUILTIN_WORKDIR, startCmd: DESKTOP_START_CMD, readyCmd: DESKTOP_READY_CMD };
  }
  return null;
}

/** Built-in templates whose rootfs the node builds in the background after `base` (never delaying it), in order. */
export const BACKGROUND_TEMPLATES: readonly string[] = [CODE_INTERPRETER_TEMPLATE_ID, DESKTOP_TEMPLATE_ID];
