// Fixed facts about a sandbox that several components share: one definition each. Plain values only: envd's
// launcher bundles this module, and every envd start would run what it imports (the schema of `/init`'s body is in
// ./envd-init.ts).

/** envd's port inside every sandbox (E2B's envd protocol). */
export const ENVD_PORT = 49983;

/** Where the node mounts envd's bundle in every sandbox (read-only), and the bundle's entry file in it. */
export const ENVD_MOUNT = '/opt/cove/envd';
/** CommonJS: Node's ESM loader alone keeps ~0.45 MiB in every idle envd (docs/decisions.md, envd as CommonJS). */
export const ENVD_ENTRY = 'envd.cjs';
/** The bundle's launcher: runs ENVD_ENTRY from V8's code cache when the bundle holds one that fits (envd's start.ts). */
export const ENVD_START = 'envd-start.cjs';
/** V8's code cache of ENVD_ENTRY's start, made by the node host when it installs the bundle, never inside a sandbox. */
export const ENVD_CODE_CACHE = 'envd.cjs.cache';
/** The bundle's native helper every command starts through, so it has its OOM score from its first instruction. */
export const ENVD_EXEC = 'envd-exec';
/**
 * The bundle's native helper a slot starts envd's node through: it preloads, from a sealed memfd, a library that drops
 * mmap's address hints, so V8's heap pages do not each need page tables of their own (~0.4 MiB per idle envd).
 */
export const ENVD_BOOT = 'envd-boot';
/** Set to '1' for the host's one run of ENVD_START that makes the cache: envd builds itself, never listens. */
export const ENVD_WRITE_CODE_CACHE_ENV = 'COVE_ENVD_WRITE_CODE_CACHE';
/**
 * The node flags envd runs with (and its code cache is made with: V8 rejects a cache made under other flags). Small
 * heaps because every idle sandbox pays for them: ~14 MiB private memory idle; a 128 MiB old space so that a
 * 100k-entry listing cannot take envd down. --optimize-for-size makes V8's heap give back spare pages: 0.3-2 MiB less
 * per idle envd, for more GC on large output (docs/decisions.md "Density: envd's idle memory").
 */
export const ENVD_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--max-old-space-size=128', '--v8-pool-size=1', '--optimize-for-size'];
/**
 * envd's own environment besides its port and init token (none of it reaches a command: envd builds each command's
 * environment afresh). Two libuv threads for its file work. One malloc arena: glibc gives each thread that allocates
 * an arena of its own, and envd's threads barely contend (~0.25 MiB less idle, ~1 MiB less after work). A fixed
 * mmap threshold: glibc otherwise raises it after the first large free, and the start's large transient blocks then
 * stay in the heap as holes (~0.2 MiB less idle). Both at the same CPU (docs/performance.md).
 */
export const ENVD_RUNTIME_ENV: Readonly<Record<string, string>> = { UV_THREADPOOL_SIZE: '2', MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '131072' };

/** The built-in template `@e2b/code-interpreter`'s `Sandbox.create()` asks for. */
export const CODE_INTERPRETER_TEMPLATE_ID = 'code-interpreter-v1';

/** envd's access token on every request to it (E2B's envd protocol: the SDK sends it). */
export const ENVD_ACCESS_TOKEN_HEADER = 'x-access-token';
/**
 * How often a streaming call wants a keepalive event, in seconds (E2B's envd protocol: the SDK sends 50 on every
 * process and watch stream).
 */
export const ENVD_KEEPALIVE_HEADER = 'keepalive-ping-interval';
/** envd's version, on its `/health` and `/init` answers (what the control plane records as `envdVersion`). */
export const ENVD_VERSION_HEADER = 'x-envd-version';

/** The node's route that configures envd at a claim or a restore (the node proxy refuses it from outside). */
export const ENVD_INIT_PATH = '/init';
/** The slot's init token on the node's own envd routes (`/init`, `/cove/logs`): nothing inside the sandbox has it. */
export const ENVD_INIT_TOKEN_HEADER = 'x-cove-init-token';
/** The largest `/init` body envd reads (env vars are the bulk). */
export const ENVD_INIT_MAX_BODY_BYTES = 1024 * 1024;

/** The volume's quota in bytes on a volume-content request, set by the edge from the control plane's answer. */
export const VOLUME_QUOTA_HEADER = 'cove-volume-quota';

/** The code-interpreter server's port inside sandboxes of that template (the SDK calls it directly). */
export const CODE_INTERPRETER_PORT = 49999;

/** The built-in template `@e2b/desktop`'s `Sandbox.create()` asks for (issue 18). */
export const DESKTOP_TEMPLATE_ID = 'desktop';
