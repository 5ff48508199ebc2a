// The global `Headers` in envd is headers-polyfill's. connect's server builds one for every request, and Node's own
// global loads all of Node's built-in undici (fetch, its HTTP/2 client, worker_threads, ...) on first use: ~45 ms
// of CPU in every envd's first request, compiled from source because envd's heap flags make V8 reject Node's code
// cache (docs/performance.md, "envd's first request"). envd makes no fetch of its own.

import { Headers } from 'headers-polyfill';

/** Defines the global without reading it first: reading Node's lazy global is what loads undici. */
export function installHeaders(): void {
  Object.defineProperty(globalThis, 'Headers', { value: Headers, writable: true, configurable: true, enumerable: false });
}
