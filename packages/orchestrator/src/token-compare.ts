// Constant-time comparison of secrets (node token). Both sides are hashed first so the comparison
// takes the same time whatever the lengths are, and timingSafeEqual always gets equal-length input.

import { createHash, timingSafeEqual } from 'node:crypto';

export function tokensEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}
