// Fixed facts about a sandbox that several components share: one definition each.

/** envd's port inside every sandbox (E2B's envd protocol). */
export const ENVD_PORT = 49983;

/** Where the node mounts envd's bundle in every sandbox (read-only), and the bundle's entry file in it. */
export const ENVD_MOUNT = '/opt/cove/envd';
/** CommonJS: Node's ESM loader alone keeps ~0.45 MiB in every idle envd (docs/decisions.md, envd as CommonJS). */
export const ENVD_ENTRY = 'envd.cjs';

/** The built-in template `@e2b/code-interpreter`'s `Sandbox.create()` asks for. */
export const CODE_INTERPRETER_TEMPLATE_ID = 'code-interpreter-v1';

/** The code-interpreter server's port inside sandboxes of that template (the SDK calls it directly). */
export const CODE_INTERPRETER_PORT = 49999;

/** The built-in template `@e2b/desktop`'s `Sandbox.create()` asks for (issue 18). */
export const DESKTOP_TEMPLATE_ID = 'desktop';
