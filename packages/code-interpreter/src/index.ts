// What the platform needs to know about the in-sandbox code-interpreter server. The guest
// directory (built by `npm run bundle -w @cove/code-interpreter`) is mounted read-only at
// GUEST_MOUNT inside code-interpreter-v1 sandboxes; START_CMD runs it as user `user`.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CODE_INTERPRETER_PORT, CODE_INTERPRETER_TEMPLATE_ID } from '@cove/contracts/sandbox';

export const CODE_INTERPRETER_TEMPLATE = CODE_INTERPRETER_TEMPLATE_ID;
export { CODE_INTERPRETER_PORT };
/** Where the guest directory appears inside the sandbox. */
export const GUEST_MOUNT = '/opt/cove/code-interpreter';
/** Foreground start command (user `user`, cwd /home/user); serves 0.0.0.0:49999. */
export const START_CMD = `${GUEST_MOUNT}/start`;
/** Exits 0 once the python and javascript default contexts exist. */
export const READY_CMD = `curl -sf http://127.0.0.1:${CODE_INTERPRETER_PORT}/health`;

/** Absolute path of the built guest directory (dist/guest). */
export function guestDir(): string {
  // dist/src/index.js -> dist/guest
  return join(dirname(dirname(fileURLToPath(import.meta.url))), 'guest');
}
