// Constant-time handling of secrets, shared by every component that checks one (control plane, edge,
// orchestrator, envd). Both sides are hashed first, so the time taken depends neither on where two
// tokens differ nor on their lengths, and timingSafeEqual always gets equal-length input.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

const digest = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

/** True when `given` equals `expected`, in time independent of their content and length. */
export function tokensEqual(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** sha256 of a token, hex: what is stored where only a later comparison is needed. */
export function tokenHash(token: string): string {
  return digest(token).toString('hex');
}

/** True when sha256(`given`) equals the stored hex `hash`, in constant time. */
export function tokenMatchesHash(given: string, hash: string): boolean {
  const a = digest(given);
  const b = Buffer.from(hash, 'hex');
  return b.length === a.length && timingSafeEqual(a, b);
}

/** The token of an `authorization: Bearer <token>` header value, if it has that form. */
export function bearerToken(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(value);
  return m?.[1];
}

/**
 * The node token of `nodeId`: HMAC-SHA256(key, "cove-node:" + nodeId), hex. Only the edge (and `cove up`, which
 * hands each orchestrator its own) holds the key, so one node's token says nothing about another's.
 */
export function deriveNodeToken(key: string, nodeId: string): string {
  return createHmac('sha256', key).update(`cove-node:${nodeId}`, 'utf8').digest('hex');
}
