import { posix } from 'node:path';
import { EnvdError } from './errors.js';

/**
 * Rejects malformed paths: empty, NUL bytes, or text that was not valid UTF-8 on the wire
 * (decoders turn such bytes into U+FFFD). Inside the sandbox every absolute path is fair game.
 */
export function checkPath(raw: string | null | undefined, field = 'path'): string {
  if (raw === undefined || raw === null || raw === '') throw new EnvdError('invalid_argument', `${field} is required`);
  if (raw.includes('\0')) throw new EnvdError('invalid_argument', `${field} contains a NUL byte`);
  if (raw.includes('\uFFFD')) throw new EnvdError('invalid_argument', `${field} is not valid UTF-8`);
  if (Buffer.byteLength(raw) > 4096) throw new EnvdError('invalid_argument', `${field} is too long`);
  return raw;
}

/** Absolute, normalised path; relative paths (and `~/`) resolve against `base` (the user's home). */
export function resolvePath(raw: string, base: string, field = 'path'): string {
  const p = checkPath(raw, field);
  if (p === '~') return posix.normalize(base);
  if (p.startsWith('~/')) return posix.resolve(base, p.slice(2));
  return posix.resolve(base, p);
}
