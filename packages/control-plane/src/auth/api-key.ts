// API keys in E2B's format: `e2b_` + 40 hex (20 random bytes), and access tokens: `sk_e2b_` + 40 hex. Only the
// sha256 is stored; the mask lets a person tell them apart without the secret.

import { createHash, randomBytes } from 'node:crypto';

export const API_KEY_RE = /^e2b_[0-9a-f]{40}$/;

export function generateApiKey(): string {
  return `e2b_${randomBytes(20).toString('hex')}`;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function maskApiKey(key: string): string {
  return `e2b_…${key.slice(-4)}`;
}

export const ACCESS_TOKEN_PREFIX = 'sk_e2b_';

export function generateAccessToken(): string {
  return `${ACCESS_TOKEN_PREFIX}${randomBytes(20).toString('hex')}`;
}

export function maskAccessToken(token: string): string {
  return `${ACCESS_TOKEN_PREFIX}…${token.slice(-4)}`;
}

/**
 * E2B's IdentifierMaskingDetails from a stored mask (`<prefix>…<last 4>`). Cove keeps no more of a secret than
 * its last four characters, so `maskedValuePrefix` is empty; every secret Cove mints has 40 characters after its prefix.
 */
export function maskingDetails(mask: string): { prefix: string; valueLength: number; maskedValuePrefix: string; maskedValueSuffix: string } {
  const at = mask.indexOf('…');
  return { prefix: at < 0 ? '' : mask.slice(0, at), valueLength: 40, maskedValuePrefix: '', maskedValueSuffix: at < 0 ? mask : mask.slice(at + 1) };
}
