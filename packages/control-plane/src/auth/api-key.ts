// API keys in E2B's format: `e2b_` + 40 hex (20 random bytes). Only sha256(key) is stored; the mask lets a
// person tell keys apart without the key.

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
