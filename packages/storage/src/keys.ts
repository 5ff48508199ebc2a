// Object keys are slash-separated relative paths. The local driver maps them straight onto the file system,
// so a key must never be able to name anything outside the store's root: no absolute paths, no `.`/`..`
// segments, no empty segments, no backslashes (path separators on other systems) and no control bytes (NUL
// ends a C string, which would let "a\0/../../etc" mean something else to the kernel than to us).

import { InvalidKey } from './errors.js';

/** The longest key accepted, in UTF-8 bytes (S3's own limit). */
export const MAX_KEY_BYTES = 1024;

/** Throws InvalidKey unless `key` is a safe object key; returns it unchanged otherwise. */
export function checkKey(key: string): string {
  if (typeof key !== 'string' || key.length === 0) throw new InvalidKey(String(key), 'empty');
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) throw new InvalidKey(key, 'longer than 1024 bytes');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) throw new InvalidKey(key, 'contains a control character');
  if (key.includes('\\')) throw new InvalidKey(key, 'contains a backslash');
  if (key.startsWith('/')) throw new InvalidKey(key, 'absolute');
  for (const segment of key.split('/')) {
    if (segment === '') throw new InvalidKey(key, 'empty path segment');
    if (segment === '.' || segment === '..') throw new InvalidKey(key, 'dot segment');
  }
  return key;
}

/**
 * Throws InvalidKey unless `prefix` is a safe listing prefix: empty, or a key prefix whose complete segments
 * obey checkKey's rules (the last segment may be partial, and a trailing slash is allowed).
 */
export function checkPrefix(prefix: string): string {
  if (prefix === '') return prefix;
  checkKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
  return prefix;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** True when `hash` is a lowercase hex sha256 digest. */
export function isSha256Hex(hash: string): boolean {
  return SHA256_HEX.test(hash);
}

/** Key of a content-addressed artifact: `artifacts/sha256/<first two hex digits>/<hash>`. */
export function artifactKey(sha256: string): string {
  if (!isSha256Hex(sha256)) throw new InvalidKey(String(sha256), 'artifact hash is not lowercase hex sha256');
  return `artifacts/sha256/${sha256.slice(0, 2)}/${sha256}`;
}

/**
 * Key of a template-build COPY tarball: `files/<scope>/<hash>.tar`, where scope is the team id (E2B's
 * cacheScope) and hash is the step's filesHash (sha256 hex).
 */
export function buildFileKey(scope: string, hash: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/.test(scope)) throw new InvalidKey(String(scope), 'bad scope');
  if (!isSha256Hex(hash)) throw new InvalidKey(String(hash), 'file hash is not lowercase hex sha256');
  return `files/${scope}/${hash}.tar`;
}

/**
 * Key of a team's sealed secret (E2B's Secret API): `secrets/<team>/<sha256 of the canonical name>`. The edge
 * writes it, nodes read it; neither key part is tenant text.
 */
export function secretKey(teamId: string, nameKey: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/.test(teamId)) throw new InvalidKey(String(teamId), 'bad team id');
  if (!isSha256Hex(nameKey)) throw new InvalidKey(String(nameKey), 'secret name key is not lowercase hex sha256');
  return `secrets/${teamId}/${nameKey}`;
}
