// Upload tokens for the local driver's upload endpoint: the local-directory counterpart of an S3 presigned
// PUT. A token names exactly one key, an expiry and a size limit, and is signed with HMAC-SHA256 under a
// secret that only the cluster holds, so the control plane can hand the URL to an SDK without ever being able
// to write anything else.
//
// Format: base64url(JSON claims) "." base64url(HMAC-SHA256(secret, first part)).

import { createHmac, timingSafeEqual } from 'node:crypto';
import { UploadTokenExpired, UploadTokenInvalid } from './errors.js';
import { checkKey } from './keys.js';

/** What an upload token allows. */
export interface UploadClaims {
  /** The one key the bearer may write. */
  key: string;
  /** Expiry, Unix seconds. */
  expiresAt: number;
  /** Largest body accepted, in bytes. */
  maxSize: number;
  /** When set, the body's sha256 must equal this (lowercase hex). */
  sha256?: string;
}

interface WireClaims {
  k: string;
  e: number;
  m: number;
  h?: string;
}

/** Options of an UploadTokenSigner. */
export interface UploadTokenSignerOptions {
  /** HMAC key; at least 32 bytes. */
  secret: Uint8Array;
  /** Clock in milliseconds; injectable so tests can mint already-expired tokens without waiting. */
  now?: () => number;
}

/** Signs and verifies upload tokens. */
export class UploadTokenSigner {
  private readonly secret: Buffer;
  private readonly now: () => number;

  constructor(options: UploadTokenSignerOptions) {
    if (options.secret.byteLength < 32) throw new RangeError('upload token secret must be at least 32 bytes');
    this.secret = Buffer.from(options.secret);
    this.now = options.now ?? Date.now;
  }

  /** A token allowing one upload to `key` for `ttlSeconds` from now. */
  sign(claims: { key: string; ttlSeconds: number; maxSize: number; sha256?: string }): {
    token: string;
    expiresAt: Date;
  } {
    checkKey(claims.key);
    const expiresAt = Math.floor(this.now() / 1000) + Math.ceil(claims.ttlSeconds);
    const wire: WireClaims = { k: claims.key, e: expiresAt, m: claims.maxSize };
    if (claims.sha256 !== undefined) wire.h = claims.sha256;
    const body = Buffer.from(JSON.stringify(wire)).toString('base64url');
    return { token: `${body}.${this.mac(body).toString('base64url')}`, expiresAt: new Date(expiresAt * 1000) };
  }

  /** The token's claims; throws UploadTokenInvalid (malformed, forged) or UploadTokenExpired. */
  verify(token: string): UploadClaims {
    const dot = token.indexOf('.');
    if (dot <= 0 || dot !== token.lastIndexOf('.')) throw new UploadTokenInvalid();
    const body = token.slice(0, dot);
    const given = Buffer.from(token.slice(dot + 1), 'base64url');
    const expected = this.mac(body);
    // Length is public (always 32 bytes for a genuine token); the bytes are compared in constant time.
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new UploadTokenInvalid();
    let wire: WireClaims;
    try {
      wire = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as WireClaims;
    } catch {
      throw new UploadTokenInvalid();
    }
    if (typeof wire.k !== 'string' || typeof wire.e !== 'number' || typeof wire.m !== 'number') {
      throw new UploadTokenInvalid();
    }
    if (this.now() / 1000 >= wire.e) throw new UploadTokenExpired();
    return {
      key: wire.k,
      expiresAt: wire.e,
      maxSize: wire.m,
      ...(typeof wire.h === 'string' ? { sha256: wire.h } : {}),
    };
  }

  private mac(body: string): Buffer {
    return createHmac('sha256', this.secret).update(body).digest();
  }
}
