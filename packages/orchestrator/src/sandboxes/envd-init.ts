// POST /init to a claimed slot's envd (reference e2b-infra.md §5.3): env vars, access token, default user.
// The slot's init token (X-Cove-Init-Token) proves the caller is the node, so nothing inside the sandbox
// can re-initialise envd. envd answers 204 with X-Envd-Version.

import { request } from 'undici';
import type { Logger } from 'pino';

export const ENVD_PORT = 49983;

export interface EnvdInitBody {
  envVars: Record<string, string>;
  accessToken?: string;
  defaultUser: string;
  defaultWorkdir: string;
  hostname: string;
  /** RFC 3339; envd sets the sandbox clock's reference from it. */
  timestamp: string;
}

export interface EnvdInitOptions {
  address: string;
  initToken: string;
  body: EnvdInitBody;
  /** Give up after this long; envd was healthy at boot so this only covers a slow start. */
  timeoutMs?: number;
  log: Logger;
}

/** Returns envd's version. Retries transient failures (connection refused, 5xx) until the deadline. */
export async function initEnvd(opts: EnvdInitOptions): Promise<string> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  const payload = JSON.stringify(opts.body);
  let lastError: unknown;
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    try {
      const res = await request(`http://${opts.address}:${ENVD_PORT}/init`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-cove-init-token': opts.initToken },
        body: payload,
        headersTimeout: Math.max(1000, deadline - Date.now()),
        bodyTimeout: Math.max(1000, deadline - Date.now()),
      });
      const text = await res.body.text();
      if (res.statusCode === 204 || res.statusCode === 200) {
        const version = res.headers['x-envd-version'];
        return (Array.isArray(version) ? version[0] : version) ?? '';
      }
      lastError = new Error(`envd /init answered ${res.statusCode}: ${text.slice(0, 200)}`);
      // A 4xx is a definite answer (bad token, bad body): retrying cannot help.
      if (res.statusCode >= 400 && res.statusCode < 500) break;
    } catch (err) {
      lastError = err;
    }
    opts.log.debug({ attempt, err: lastError }, 'envd /init not accepted yet');
    await new Promise((r) => setTimeout(r, Math.min(20 * 2 ** attempt, 250)));
  }
  throw lastError instanceof Error ? lastError : new Error('envd /init timed out');
}
