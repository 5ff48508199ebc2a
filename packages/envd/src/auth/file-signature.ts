import { createHash } from 'node:crypto';
import { EnvdError } from '../errors.js';
import { tokensEqual } from '@cove/auth-tokens';

export type FileOperation = 'read' | 'write';

/**
 * E2B's signed file URL: `v1_` + unpadded base64 of
 * sha256("<path>:<read|write>:<username>:<token>[:<expiry>]") (reference e2b-sdk.md §3.4).
 */
export function fileSignature(
  path: string,
  operation: FileOperation,
  username: string,
  token: string,
  expiration?: number,
): string {
  const raw =
    expiration === undefined
      ? `${path}:${operation}:${username}:${token}`
      : `${path}:${operation}:${username}:${token}:${expiration}`;
  return 'v1_' + createHash('sha256').update(raw).digest('base64').replace(/=+$/, '');
}

export interface SignatureQuery {
  path: string;
  username: string;
  signature: string;
  expiration: string | null;
}

/** Throws `unauthenticated` / `signature_expired` unless the query carries a valid signature. */
export function verifyFileSignature(q: SignatureQuery, operation: FileOperation, token: string, nowMs: number): void {
  let expiration: number | undefined;
  if (q.expiration !== null) {
    if (!/^\d{1,15}$/.test(q.expiration)) throw new EnvdError('invalid_argument', 'invalid signature_expiration');
    expiration = Number(q.expiration);
    if (expiration * 1000 < nowMs) throw new EnvdError('signature_expired', 'signature is already expired');
  }
  const expected = fileSignature(q.path, operation, q.username, token, expiration);
  if (!tokensEqual(q.signature, expected)) throw new EnvdError('unauthenticated', 'invalid signature');
}
