// Bounded readers for what a sandbox sends first: a TLS ClientHello (for its SNI) or an HTTP request head
// (for its Host). The sandbox is hostile: every read has a byte cap and a deadline, and a parse failure is an
// answer ("no name"), never an exception that escapes.

import type { Socket } from 'node:net';

export const HELLO_MAX_BYTES = 16 * 1024 + 5 * 4;
export const HEAD_MAX_BYTES = 16 * 1024;

export class ReadLimitError extends Error {
  constructor(readonly code: 'too_large' | 'timeout' | 'closed' | 'malformed', message: string) {
    super(message);
    this.name = 'ReadLimitError';
  }
}

/**
 * Read from `socket` until `complete(buf)` says the prefix is whole (returns its length) or a limit is hit.
 * The bytes read are returned so the caller can replay them upstream.
 */
export function readPrefix(socket: Socket, max: number, timeoutMs: number, complete: (buf: Buffer) => number | 'more' | 'bad'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err?: ReadLimitError): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onEnd);
      socket.off('close', onEnd);
      socket.pause();
      if (err) reject(err);
      else resolve(buf);
    };
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const r = complete(buf);
      if (r === 'bad') done(new ReadLimitError('malformed', 'malformed prefix'));
      else if (r !== 'more' && r > max) done(new ReadLimitError('too_large', `prefix exceeds ${max} bytes`));
      else if (r !== 'more') done();
      else if (buf.length >= max) done(new ReadLimitError('too_large', `prefix exceeds ${max} bytes`));
    };
    const onEnd = (): void => done(new ReadLimitError('closed', 'peer closed before the prefix was complete'));
    const timer = setTimeout(() => done(new ReadLimitError('timeout', `no complete prefix within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onEnd);
    socket.once('close', onEnd);
    socket.resume();
  });
}

/** Bytes of the TLS handshake records that carry the ClientHello, or 'more'/'bad'. */
export function clientHelloComplete(buf: Buffer): number | 'more' | 'bad' {
  const hs = collectHandshake(buf);
  return hs === 'bad' || hs === 'more' ? hs : hs.consumed;
}

function collectHandshake(buf: Buffer): 'more' | 'bad' | { body: Buffer; consumed: number } {
  const parts: Buffer[] = [];
  let off = 0;
  let have = 0;
  let need = -1;
  while (true) {
    if (buf.length < off + 5) return 'more';
    if (buf[off] !== 22 || buf[off + 1] !== 3) return 'bad';
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384) return 'bad';
    if (buf.length < off + 5 + len) return 'more';
    parts.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0 && have >= 4) {
      const first = Buffer.concat(parts);
      if (first[0] !== 1) return 'bad';
      need = 4 + first.readUIntBE(1, 3);
      if (need > 16384) return 'bad';
    }
    if (need >= 0 && have >= need) return { body: Buffer.concat(parts).subarray(0, need), consumed: off };
  }
}

/** The server_name of a complete ClientHello (lower case), undefined when absent or unparseable. */
export function parseSni(buf: Buffer): string | undefined {
  const hs = collectHandshake(buf);
  if (hs === 'bad' || hs === 'more') return undefined;
  const b = hs.body;
  try {
    let p = 4 + 2 + 32;
    p += 1 + b[p];
    p += 2 + b.readUInt16BE(p);
    p += 1 + b[p];
    if (p + 2 > b.length) return undefined;
    const extEnd = p + 2 + b.readUInt16BE(p);
    p += 2;
    if (extEnd > b.length) return undefined;
    while (p + 4 <= extEnd) {
      const type = b.readUInt16BE(p);
      const len = b.readUInt16BE(p + 2);
      p += 4;
      if (p + len > extEnd) return undefined;
      if (type === 0) {
        let q = p + 2;
        const listEnd = Math.min(p + 2 + b.readUInt16BE(p), p + len);
        while (q + 3 <= listEnd) {
          const nameType = b[q];
          const nameLen = b.readUInt16BE(q + 1);
          q += 3;
          if (q + nameLen > listEnd) return undefined;
          if (nameType === 0) {
            const name = b.subarray(q, q + nameLen).toString('latin1');
            return /^[A-Za-z0-9._-]{1,253}$/.test(name) ? name.toLowerCase() : undefined;
          }
          q += nameLen;
        }
        return undefined;
      }
      p += len;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** Length of an HTTP request head (through CRLFCRLF), or 'more'. */
export function httpHeadComplete(buf: Buffer): number | 'more' | 'bad' {
  const i = buf.indexOf('\r\n\r\n');
  if (i >= 0) return i + 4;
  // The first bytes must look like a method; anything else is not HTTP and need not be waited for.
  return /^[A-Z]{0,16}$|^[A-Z]{1,16} /.test(buf.subarray(0, 17).toString('latin1')) ? 'more' : 'bad';
}

/** The Host of a request head (without port, lower case); undefined when missing, duplicated or malformed. */
export function parseHttpHost(head: Buffer): string | undefined {
  const lines = head.toString('latin1').split('\r\n');
  if (!/^[A-Z]{1,16} \S+ HTTP\/1\.[01]$/.test(lines[0] ?? '')) return undefined;
  let host: string | undefined;
  for (const line of lines.slice(1)) {
    if (line === '') break;
    if (/^\s/.test(line)) return undefined; // obsolete line folding hides headers
    const c = line.indexOf(':');
    if (c <= 0) return undefined;
    if (line.slice(0, c).toLowerCase() === 'host') {
      if (host !== undefined) return undefined; // two Hosts: which one the upstream uses is anyone's guess
      host = line.slice(c + 1).trim();
    }
  }
  if (!host) return undefined;
  const m = /^([A-Za-z0-9._-]{1,253})(?::\d{1,5})?$/.exec(host);
  return m ? m[1].toLowerCase() : undefined;
}
