import type { IncomingMessage } from 'node:http';
import { tokensEqual } from '@cove/auth-tokens';
import type { EnvdState } from '../state.js';

/** True when no access token is configured yet, or the request carries the right `X-Access-Token`. */
export function hasValidAccessToken(req: { headers: IncomingMessage['headers'] } | { header: Headers }, state: EnvdState): boolean {
  if (state.accessToken === undefined) return true;
  const raw = 'header' in req ? req.header.get('x-access-token') : req.headers['x-access-token'];
  const given = Array.isArray(raw) ? raw[0] : raw;
  if (typeof given !== 'string' || given === '') return false;
  return tokensEqual(given, state.accessToken);
}
