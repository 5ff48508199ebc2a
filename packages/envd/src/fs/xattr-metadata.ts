import { EnvdError } from '../errors.js';

/** E2B keeps file metadata in `user.e2b.<key>` extended attributes (envd ≥ 0.6.2). */
const PREFIX = 'user.e2b.';
const KEY_RE = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,246}$/;
const VALUE_RE = /^[\x20-\x7e]*$/;
const MAX_TOTAL = 4096;

interface XattrModule {
  getAttribute(path: string, attr: string): Promise<Buffer>;
  setAttribute(path: string, attr: string, value: string | Buffer): Promise<void>;
  listAttributes(path: string): Promise<string[]>;
  removeAttribute(path: string, attr: string): Promise<void>;
}

let xattr: Promise<XattrModule> | undefined;

/**
 * fs-xattr is loaded on first use: an idle envd should not pay for the addon.
 * The bundle ships it as node_modules/fs-xattr next to envd.cjs.
 */
function loadXattr(): Promise<XattrModule> {
  xattr ??= import('fs-xattr') as Promise<XattrModule>;
  return xattr;
}


/** Validates `X-Metadata-*` pairs the way E2B does (HTTP token keys, printable ASCII values, ≤4 KiB). */
export function checkMetadata(metadata: Record<string, string>): void {
  let total = 0;
  for (const [k, v] of Object.entries(metadata)) {
    if (!KEY_RE.test(k)) throw new EnvdError('invalid_argument', `invalid metadata key "${k}"`);
    if (!VALUE_RE.test(v)) throw new EnvdError('invalid_argument', `invalid metadata value for key "${k}"`);
    total += PREFIX.length + k.length + v.length;
  }
  if (total > MAX_TOTAL) throw new EnvdError('invalid_argument', 'metadata exceeds 4096 bytes');
}

/**
 * Makes `metadata` the file's whole metadata: an upload replaces what the file carried before, so an overwrite
 * without `X-Metadata-*` headers leaves none (as E2B's envd does).
 */
export async function replaceMetadata(path: string, metadata: Record<string, string>): Promise<void> {
  const entries = Object.entries(metadata);
  const x = await loadXattr();
  let existing: string[] = [];
  try {
    existing = await x.listAttributes(path);
  } catch {
    // No xattr support here: nothing stored before, and nothing can be stored now unless asked.
  }
  for (const name of existing) {
    if (name.startsWith(PREFIX) && !(name.slice(PREFIX.length) in metadata)) await x.removeAttribute(path, name);
  }
  for (const [k, v] of entries) await x.setAttribute(path, PREFIX + k, v);
}

/** Reads `user.e2b.*` xattrs; filesystems without xattr support simply yield no metadata. */
export async function readMetadata(path: string): Promise<Record<string, string>> {
  const x = await loadXattr();
  let names: string[];
  try {
    names = await x.listAttributes(path);
  } catch {
    return {};
  }
  const out: Record<string, string> = {};
  for (const name of names) {
    if (!name.startsWith(PREFIX)) continue;
    try {
      out[name.slice(PREFIX.length)] = (await x.getAttribute(path, name)).toString('utf8');
    } catch {
      // removed between list and get
    }
  }
  return out;
}
