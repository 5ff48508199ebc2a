// Sandbox ids and tokens. Ids follow E2B (`i` + 20 of [a-z0-9]); tokens are independent random values, never
// derivable from the id (DESIGN.md §5), unlike E2B's HMAC-derived ones.

import { randomBytes, randomInt, randomUUID } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export const SANDBOX_ID_RE = /^i[a-z0-9]{20}$/;

export function newSandboxId(): string {
  return `i${randomChars(20)}`;
}

export function newAccessToken(): string {
  return randomBytes(32).toString('hex');
}

export function newId(): string {
  return randomUUID();
}

function randomChars(n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += ALPHABET[randomInt(ALPHABET.length)];
  return s;
}

/** A pause snapshot's id (`[a-z0-9-]{1,64}`, the node's rule): fresh for every pause, so ids are never reused. */
export function newPauseSnapshotId(sandboxId: string): string {
  return `${sandboxId}-p${randomChars(10)}`;
}

/** A persistent snapshot's id: like a template id (20 of [a-z0-9]), since the SDK uses it as one. */
export function newSnapshotId(): string {
  return randomChars(20);
}
