// The built-in `code-interpreter-v1` template as the node runs it (docs/decisions.md, "code-interpreter-v1 on the
// node"): its rootfs is built from its recipe like `base`; its guest dir (the in-sandbox server, package
// @cove/code-interpreter) is lent read-only at GUEST_MOUNT; its server is started as `user` in /home/user and
// waited for before a slot is handed out. The one place the start and ready commands are defined: at merge they
// come from @cove/code-interpreter's START_CMD / READY_CMD / guestDir().

import { CODE_INTERPRETER_PORT, CODE_INTERPRETER_TEMPLATE_ID } from '@cove/contracts/sandbox';
import { resolve } from 'node:path';
import { packageRoot } from './package-info.js';

/** Where the guest dir appears inside every slot stacked on the code-interpreter-v1 rootfs (read-only). */
export const GUEST_MOUNT = '/opt/cove/code-interpreter';

/** packages/code-interpreter/dist/guest, next to this package (as the envd bundle is found). */
export function defaultGuestDir(): string {
  return resolve(packageRoot(), '..', 'code-interpreter', 'dist', 'guest');
}

/** The guest's entry: runs the server in the foreground on 0.0.0.0:CODE_INTERPRETER_PORT. */
export const START_CMD_INNER = `${GUEST_MOUNT}/start`;

/**
 * What a slot runs (bash -l -c, in the background through envd). The server must run as `user` in /home/user
 * whoever starts it: a user template built FROM code-interpreter-v1 inherits this command but may end as root
 * (E2B builds start as root), so root drops to `user` itself (runuser, util-linux, in every Debian rootfs).
 */
export const START_CMD =
  `cd /home/user && if [ "$(id -u)" = 0 ]; then exec runuser -u user -- ${START_CMD_INNER}; else exec ${START_CMD_INNER}; fi`;

/** Exits 0 once the server answers /health (it does only when its default kernels are up). */
export const READY_CMD = `curl -sf -o /dev/null http://127.0.0.1:${CODE_INTERPRETER_PORT}/health`;

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

/** The start spec of a built-in template, or null when it has none (`base`). */
export function builtinStartOf(templateId: string): StartSpec | null {
  if (templateId !== CODE_INTERPRETER_TEMPLATE_ID) return null;
  return { templateId, buildId: null, env: {}, user: 'user', workdir: '/home/user', startCmd: START_CMD, readyCmd: READY_CMD };
}

/** Built-in templates whose rootfs the node builds in the background after `base` (never delaying it). */
export const BACKGROUND_TEMPLATES: readonly string[] = [CODE_INTERPRETER_TEMPLATE_ID];
