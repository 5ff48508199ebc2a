// Sandbox ids and tokens. Ids follow E2B (`i` + 20 of [a-z0-9]); tokens are independent random values, never
// derivable from the id (DESIGN.md §5), unlike E2B's HMAC-derived ones.

import { randomBytes, randomInt, randomUUID } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export const SANDBOX_ID_RE = /^i[a-z0-9]{20}$/;

export function newSandboxId(): string {
  let id = 'i';
  for (let i = 0; i < 20; i++) id += ALPHABET[randomInt(ALPHABET.length)];
  return id;
}

export function newAccessToken(): string {
  return randomBytes(32).toString('hex');
}

export function newId(): string {
  return randomUUID();
}
