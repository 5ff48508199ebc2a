// Constant-time comparison of secrets (cluster token, node token, traffic tokens). Both sides are hashed
// first so the time taken does not depend on where they differ or on their lengths.

import { createHash, timingSafeEqual } from 'node:crypto';

/** sha256 of a token, hex; what the catalog stores instead of a sandbox's traffic token. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** True when `given` equals `expected`, in time independent of their content. */
export function tokensEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** True when sha256(`given`) equals the stored hex `hash`, in constant time. */
export function tokenMatchesHash(given: string, hash: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = Buffer.from(hash, 'hex');
  return b.length === a.length && timingSafeEqual(a, b);
}

/** The token of an `authorization: Bearer <token>` header value, if it has that form. */
export function bearerToken(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(value);
  return m?.[1];
}
