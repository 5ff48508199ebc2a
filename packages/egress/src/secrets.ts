// E2B's Secret values (docs/network-policy.md, "Secrets"): sealed to the cluster, opened only by its nodes' egress
// proxies. The cluster's X25519 key pair is derived from the cluster key every node holds (the artifact key) and
// the control plane does not: nodes publish the public half (InfoResponse.secrets_public_key), the control plane
// seals a value to it the moment it receives it and hands the sealed blob to the cluster's storage through the
// edge, which can store it but not open it. Only a node (the proxy, when a request matches a rule) opens it.
//
// Seal: an ephemeral X25519 key, ECDH with the cluster key, HKDF-SHA256 to an AES-256-GCM key; the team, the
// secret's name and its version are the associated data, so a blob moved to another team's or name's object
// fails to open.

import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { z } from 'zod';

/** Longest secret name (bytes of its lower-cased form): it ends up inside `${e2b.secrets.<name>}` placeholders. */
export const MAX_SECRET_NAME_BYTES = 128;
/** Largest secret value: a header value (the only place a value goes) is bounded to 8 KiB by the policy parser. */
export const MAX_SECRET_VALUE_BYTES = 8 * 1024;
/** Largest sealed blob the edge stores and a node reads back: a value at its limit, base64, plus the envelope. */
export const MAX_SEALED_SECRET_BYTES = 16 * 1024;

const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/**
 * Why `name` cannot be a secret name, or undefined. The SDK's own rule (no `{`, `}`, control characters: the
 * name is interpolated into a placeholder), plus a length bound and E2B's reserved `sec_` prefix (identifiers).
 */
export function secretNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (Buffer.byteLength(name, 'utf8') > MAX_SECRET_NAME_BYTES) return `must be at most ${MAX_SECRET_NAME_BYTES} bytes`;
  if (/[{}\p{Cc}\s]/u.test(name)) return "must not contain '{', '}', whitespace or control characters";
  if (name.toLowerCase().startsWith('sec_')) return "the 'sec_' prefix is reserved for secret identifiers";
  return undefined;
}

/** Why `value` cannot be a secret value, or undefined (it becomes an HTTP header value). */
export function secretValueProblem(value: string): string | undefined {
  if (value.length === 0) return 'must not be empty';
  if (Buffer.byteLength(value, 'utf8') > MAX_SECRET_VALUE_BYTES) return `must be at most ${MAX_SECRET_VALUE_BYTES} bytes`;
  // A header value: no CR/LF/NUL (header injection), nothing outside what Node's http accepts.
  if (/[^\t\x20-\x7e\x80-\xff]/.test(value)) return 'must be printable (it is sent as an HTTP header value)';
  return undefined;
}

/** E2B lower-cases names before storage; lookups (placeholders too) use the same form. */
export function canonicalSecretName(name: string): string {
  return name.toLowerCase();
}

/** The storage name of a secret: sha256 of its canonical name (hex), so object keys never carry tenant text. */
export function secretNameKey(name: string): string {
  return createHash('sha256').update(canonicalSecretName(name), 'utf8').digest('hex');
}

/** The cluster's secret key pair, derived from the cluster key (HKDF-SHA256, its own label). */
export function clusterSecretKeys(clusterKey: string): { privateKey: KeyObject; publicKey: string } {
  const d = Buffer.from(hkdfSync('sha256', Buffer.from(clusterKey, 'utf8'), 'cove-secrets-v1', 'cove-secrets:x25519', 32));
  const privateKey = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, d]), format: 'der', type: 'pkcs8' });
  return { privateKey, publicKey: rawPublic(createPublicKey(privateKey)).toString('base64') };
}

function rawPublic(k: KeyObject): Buffer {
  return (k.export({ format: 'der', type: 'spki' }) as Buffer).subarray(X25519_SPKI_PREFIX.length);
}

function publicKeyOf(b64: string): KeyObject {
  const raw = Buffer.from(b64, 'base64');
  if (raw.length !== 32 || raw.toString('base64') !== b64) throw new RangeError('a secrets public key is 32 bytes of base64');
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** What a sealed value is bound to (associated data). */
export interface SecretBinding {
  teamId: string;
  /** canonical name */
  name: string;
  version: number;
}

function aad(b: SecretBinding): Buffer {
  return Buffer.from(JSON.stringify(['cove-secret-v1', b.teamId, canonicalSecretName(b.name), b.version]), 'utf8');
}

function aeadKey(shared: Buffer, epk: Buffer, pk: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.concat([epk, pk]), 'cove-secret-seal-v1', 32));
}

const B64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/);
/** The sealed blob (the one wire shape of a stored secret). */
const SealedSchema = z.object({ v: z.literal(1), version: z.number().int().positive(), epk: B64, iv: B64, ct: B64, tag: B64 }).strict();

/** Seals `value` to the cluster's public key; returns the blob to store (JSON text). */
export function sealSecret(clusterPublicKey: string, binding: SecretBinding, value: string): string {
  const pk = publicKeyOf(clusterPublicKey);
  const eph = generateKeyPairSync('x25519');
  const epk = rawPublic(eph.publicKey);
  const key = aeadKey(diffieHellman({ privateKey: eph.privateKey, publicKey: pk }), epk, rawPublic(pk));
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad(binding));
  const ct = Buffer.concat([c.update(value, 'utf8'), c.final()]);
  return JSON.stringify({ v: 1, version: binding.version, epk: epk.toString('base64'), iv: iv.toString('base64'), ct: ct.toString('base64'), tag: c.getAuthTag().toString('base64') });
}

/** A blob that is not a well-formed sealed secret, or did not open for this team and name. */
export class SecretOpenError extends Error {
  override readonly name = 'SecretOpenError';
}

/**
 * Opens a stored blob for `teamId`/`name`. Throws SecretOpenError for anything malformed, oversized or bound to
 * another team, name or version (the blob's storage is not trusted).
 */
export function openSecret(privateKey: KeyObject, teamId: string, name: string, blob: string): { version: number; value: string } {
  if (Buffer.byteLength(blob, 'utf8') > MAX_SEALED_SECRET_BYTES) throw new SecretOpenError('sealed secret too large');
  let parsed: z.infer<typeof SealedSchema>;
  try {
    parsed = SealedSchema.parse(JSON.parse(blob));
  } catch {
    throw new SecretOpenError('not a sealed secret');
  }
  try {
    const epk = Buffer.from(parsed.epk, 'base64');
    const eph = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, epk]), format: 'der', type: 'spki' });
    const key = aeadKey(diffieHellman({ privateKey, publicKey: eph }), epk, rawPublic(createPublicKey(privateKey)));
    const d = createDecipheriv('aes-256-gcm', key, Buffer.from(parsed.iv, 'base64'));
    d.setAAD(aad({ teamId, name, version: parsed.version }));
    d.setAuthTag(Buffer.from(parsed.tag, 'base64'));
    const value = Buffer.concat([d.update(Buffer.from(parsed.ct, 'base64')), d.final()]).toString('utf8');
    return { version: parsed.version, value };
  } catch {
    throw new SecretOpenError('sealed secret does not open for this team and name');
  }
}

/** Whether `blob` has the sealed shape (what the edge checks before storing; it cannot open it). */
export function isSealedSecret(blob: string): boolean {
  if (Buffer.byteLength(blob, 'utf8') > MAX_SEALED_SECRET_BYTES) return false;
  try {
    return SealedSchema.safeParse(JSON.parse(blob)).success;
  } catch {
    return false;
  }
}
