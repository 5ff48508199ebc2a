// What envd's launcher (start.ts) and envd's main share about the code cache.

/** Where the launcher leaves how this start was compiled, for envd's "envd listening" log line. */
export const CODE_CACHE_STATE = Symbol.for('cove.envd.codeCache');

/** `used`: compiled from the bundle's cache; `rejected`: V8 refused it (another node or flags); `none`: no cache or no launcher. */
export type CodeCacheState = 'used' | 'rejected' | 'none';

export function codeCacheState(): CodeCacheState {
  return ((globalThis as Record<symbol, unknown>)[CODE_CACHE_STATE] as CodeCacheState | undefined) ?? 'none';
}
