import type { IncomingMessage } from 'node:http';
import { tokensEqual } from '@cove/auth-tokens';
import { ENVD_ACCESS_TOKEN_HEADER } from '@cove/contracts/sandbox';
import type { EnvdState } from '../state.js';

/** True when no access token is configured yet, or the request carries the right `X-Access-Token`. */
export function hasValidAccessToken(req: { headers: IncomingMessage['headers'] } | { header: Headers }, state: EnvdState): boolean {
  if (state.accessToken === undefined) return true;
  const raw = 'header' in req ? req.header.get(ENVD_ACCESS_TOKEN_HEADER) : req.headers[ENVD_ACCESS_TOKEN_HEADER];
  const given = Array.isArray(raw) ? raw[0] : raw;
  if (typeof given !== 'string' || given === '') return false;
  return tokensEqual(given, state.accessToken);
}
