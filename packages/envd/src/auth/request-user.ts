import { EnvdError } from '../errors.js';

/**
 * Extracts the user name from `Authorization: Basic base64("<user>:")` (E2B's way of
 * selecting the user on RPCs). Returns undefined when the header is absent.
 */
export function userFromAuthorization(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=_-]*)\s*$/i.exec(header);
  if (!m) throw new EnvdError('invalid_argument', 'authorization header must be Basic');
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const name = colon === -1 ? decoded : decoded.slice(0, colon);
  return name === '' ? undefined : name;
}
