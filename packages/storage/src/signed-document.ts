// Authenticated metadata documents (snapshot and build manifests): cluster storage is shared, so what a node runs
// must be vouched for by a key only nodes hold (COVE_ARTIFACT_KEY), not by where a document sits. A document is
// stored as JSON with one extra member, `mac`: HMAC-SHA256 over a purpose label and the canonical encoding of the
// rest (members sorted by name at every level, no whitespace), so any change to any field, a copy under another
// purpose, or an unsigned document is refused. Artifacts the document names are checked by their sha256 on read.

import { createHmac, timingSafeEqual } from 'node:crypto';
import type { BlobStore } from './blob-store.js';

const MAC_PREFIX = 'hmac-sha256:';
/** Keys shorter than this are refused: they could be guessed. */
export const MIN_ARTIFACT_KEY_LENGTH = 32;

/** Why a document was refused: `unsigned` (no mac, e.g. written before manifests were signed) or `forged`. */
export class DocumentUntrusted extends Error {
  readonly code = 'document_untrusted';
  constructor(readonly reason: 'unsigned' | 'forged', what: string) {
    super(`${what} is not authenticated by this cluster's artifact key (${reason})`);
    this.name = new.target.name;
  }
}

/** JSON with members sorted at every level and no whitespace; what JSON.stringify drops is dropped. */
export function canonicalJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) out[k] = sort((v as Record<string, unknown>)[k]);
      return out;
    }
    return v;
  };
  return JSON.stringify(sort(JSON.parse(JSON.stringify(value))));
}

function mac(key: string, purpose: string, doc: unknown): Buffer {
  return createHmac('sha256', key).update(`cove:${purpose}\n`).update(canonicalJson(doc)).digest();
}

/** `doc` with its `mac` member, as text to store. */
export function signDocument(key: string, purpose: string, doc: Record<string, unknown>): string {
  if (key.length < MIN_ARTIFACT_KEY_LENGTH) throw new Error('the artifact key is too short');
  const { mac: _, ...rest } = doc;
  return `${JSON.stringify({ ...rest, mac: MAC_PREFIX + mac(key, purpose, rest).toString('hex') }, null, 2)}\n`;
}

/**
 * The document without its `mac`, once the mac proves it was written with `key` for `purpose`. Throws
 * DocumentUntrusted otherwise (the caller parses the result with its schema afterwards).
 */
export function verifyDocument(key: string, purpose: string, parsed: unknown, what: string): Record<string, unknown> {
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new DocumentUntrusted('unsigned', what);
  const { mac: given, ...rest } = parsed as Record<string, unknown>;
  if (typeof given !== 'string' || !given.startsWith(MAC_PREFIX)) throw new DocumentUntrusted('unsigned', what);
  const hex = given.slice(MAC_PREFIX.length);
  const want = mac(key, purpose, rest);
  const got = /^[0-9a-f]{64}$/.test(hex) ? Buffer.from(hex, 'hex') : Buffer.alloc(0);
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw new DocumentUntrusted('forged', what);
  return rest;
}

const keys = new WeakMap<BlobStore, string>();

/**
 * Binds the cluster's artifact key to a store, once at wiring (app.ts): every reader and writer of metadata in
 * that store (snapshots, builds, the build engine) then signs and verifies with it, without threading the key.
 */
export function bindArtifactKey(store: BlobStore, key: string): void {
  if (key.length < MIN_ARTIFACT_KEY_LENGTH) throw new Error(`the artifact key must be at least ${MIN_ARTIFACT_KEY_LENGTH} characters`);
  keys.set(store, key);
}

/** The key bound to `store`; throws when none is (fail closed: nothing is ever written or read unsigned). */
export function artifactKeyOf(store: BlobStore): string {
  const key = keys.get(store);
  if (!key) throw new Error('no artifact key is bound to this store (bindArtifactKey)');
  return key;
}
