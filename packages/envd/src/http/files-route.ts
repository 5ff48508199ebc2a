import type { Stats } from 'node:fs';
import { lstat, open, stat, unlink } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { posix } from 'node:path';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import busboy from 'busboy';
import type { Logger } from 'pino';
import { EnvdError, toEnvdError } from '../errors.js';
import { checkMetadata, replaceMetadata } from '../fs/xattr-metadata.js';
import { makeDirsOwned } from '../fs/owned-paths.js';
import { resolvePath } from '../paths.js';
import type { EnvdState } from '../state.js';
import { assertCanAccessFile, assertCanModifyIn } from '../users/access-check.js';
import type { SandboxUser, UserDb } from '../users/user-db.js';
import type { LogRing } from '../log-ring.js';
import { sendError, sendJson } from './json-reply.js';

export interface FilesDeps {
  state: EnvdState;
  users: UserDb;
  maxUploadBytes: number;
  log: Logger;
}

interface WrittenFile {
  path: string;
  name: string;
  type: 'file';
  metadata?: Record<string, string>;
}

const METADATA_PREFIX = 'x-metadata-';

/** `X-Metadata-<key>` headers with the key's case as the client sent it (Node lowercases `headers`). */
function metadataFrom(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i];
    if (name.toLowerCase().startsWith(METADATA_PREFIX)) out[name.slice(METADATA_PREFIX.length)] = req.rawHeaders[i + 1];
  }
  checkMetadata(out);
  return out;
}

async function userFor(query: URLSearchParams, deps: FilesDeps): Promise<SandboxUser> {
  const name = query.get('username') || deps.state.defaultUser;
  return deps.users.lookup(name);
}

/** `GET /files?path=&username=`: raw bytes, gzip when the client accepts it. */
export async function handleDownload(req: IncomingMessage, res: ServerResponse, query: URLSearchParams, deps: FilesDeps): Promise<void> {
  const user = await userFor(query, deps);
  const path = resolvePath(query.get('path') ?? '', user.home);
  let st: Stats;
  try {
    st = await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new EnvdError('not_found', `file ${path} not found`);
    throw e;
  }
  if (st.isDirectory()) throw new EnvdError('invalid_argument', `path ${path} is a directory`);
  await assertCanAccessFile(path, user, 'r');
  const handle = await open(path, 'r');
  const source = handle.createReadStream();
  const gzip = /\bgzip\b/i.test(String(req.headers['accept-encoding'] ?? '')) && st.size > 0;
  const headers: Record<string, string | number> = {
    'content-type': 'application/octet-stream',
    'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(posix.basename(path))}`,
    'cache-control': 'no-store',
  };
  if (gzip) {
    headers['content-encoding'] = 'gzip';
    headers.vary = 'Accept-Encoding';
    res.writeHead(200, headers);
    await pipeline(source, createGzip(), res).catch(() => res.destroy());
  } else {
    headers['content-length'] = st.size;
    res.writeHead(200, headers);
    await pipeline(source, res).catch(() => res.destroy());
  }
}

/** Counts bytes and fails once the configured upload limit is crossed. */
function limiter(max: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (max > 0 && seen > max) cb(new EnvdError('payload_too_large', `upload exceeds the limit of ${max} bytes`));
      else cb(null, chunk);
    },
  });
}

/** Writes one uploaded stream to `path` as `user`: parents created and owned by the user, file chowned. */
async function writeUpload(source: Readable, path: string, user: SandboxUser, metadata: Record<string, string>, deps: FilesDeps): Promise<WrittenFile> {
  const existing = await lstat(path).catch(() => undefined);
  if (existing?.isDirectory()) throw new EnvdError('invalid_argument', `path ${path} is a directory`);
  if (existing?.isSymbolicLink() && !(await stat(path).catch(() => undefined))) {
    // Writing through a dangling link would let a user create files anywhere as root.
    throw new EnvdError('invalid_argument', `path ${path} is a dangling symbolic link`);
  }
  if (existing) await assertCanAccessFile(path, user, 'w');
  else await assertCanModifyIn(path, user);
  await makeDirsOwned(posix.dirname(path), user);
  const handle = await open(path, 'w', 0o644);
  try {
    // A new file belongs to the user; an existing one keeps its owner, as if the user had written it.
    if (!existing) await handle.chown(user.uid, user.gid);
    // The write stream owns the handle from here and closes it when done or destroyed.
    await pipeline(source, limiter(deps.maxUploadBytes), handle.createWriteStream());
  } catch (e) {
    await handle.close().catch(() => undefined);
    if (toEnvdError(e).code === 'payload_too_large') await unlink(path).catch(() => undefined);
    throw e;
  }
  await replaceMetadata(path, metadata);
  const out: WrittenFile = { path, name: posix.basename(path), type: 'file' };
  if (Object.keys(metadata).length > 0) out.metadata = metadata;
  return out;
}

/**
 * Time envd spends discarding the rest of a refused upload so the client can read the error. Bounded by
 * time, not bytes: closing with unread data makes the kernel send a reset, which destroys the already-sent
 * error before a proxy in front of envd reads it (the edge then has to answer 502 instead of our 413).
 * Discarding runs at loopback speed (~1 GB/s through both proxies), so 15 s covers any upload that fits a
 * sandbox disk.
 */
const DRAIN_MAX_BYTES = Number.POSITIVE_INFINITY;
const DRAIN_MAX_MS = 15_000;

/**
 * After an error mid-upload: read and discard the rest of the body (bounded), so the client
 * finishes sending and sees the JSON error instead of a reset; past the bound, close.
 */
async function abandonBody(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.complete || req.readableEnded) return;
  req.unpipe();
  const drained = await new Promise<boolean>((resolve) => {
    let seen = 0;
    const timer = setTimeout(() => done(false), DRAIN_MAX_MS);
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > DRAIN_MAX_BYTES) done(false);
    };
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onErr);
      resolve(ok);
    };
    const onEnd = (): void => done(true);
    const onErr = (): void => done(false);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onErr);
    req.resume();
  });
  if (!drained) {
    res.setHeader('connection', 'close');
    req.resume();
  }
}

/**
 * `POST /files`: multipart/form-data (one or more `file` parts; filename is the target path
 * when no `path` query) or application/octet-stream with `path` (gzip allowed).
 */
export async function handleUpload(req: IncomingMessage, res: ServerResponse, query: URLSearchParams, deps: FilesDeps): Promise<void> {
  try {
    const user = await userFor(query, deps);
    const metadata = metadataFrom(req);
    const declared = Number(req.headers['content-length'] ?? NaN);
    const encoding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
    if (deps.maxUploadBytes > 0 && encoding === 'identity' && declared > deps.maxUploadBytes + 64 * 1024) {
      throw new EnvdError('payload_too_large', `upload exceeds the limit of ${deps.maxUploadBytes} bytes`);
    }
    const contentType = String(req.headers['content-type'] ?? '').toLowerCase();
    let written: WrittenFile[];
    if (contentType.startsWith('multipart/form-data')) {
      if (encoding !== 'identity') throw new EnvdError('invalid_argument', 'Content-Encoding is only supported for octet-stream uploads');
      written = await multipartUpload(req, query, user, metadata, deps);
    } else if (contentType.startsWith('application/octet-stream') || contentType === '') {
      const path = resolvePath(query.get('path') ?? '', user.home);
      let source: Readable;
      if (encoding === 'gzip') {
        const gunzip = createGunzip();
        // Bad gzip can fail before the pipeline is attached; the pipeline still sees `errored`.
        gunzip.on('error', () => undefined);
        source = req.pipe(gunzip);
      }
      else if (encoding !== 'identity') throw new EnvdError('invalid_argument', `unsupported Content-Encoding ${encoding}`);
      // Piped, never the pipeline's own source: a failed write (ENOSPC) makes pipeline destroy its source, and a
      // destroyed request never ends, so abandonBody waited out DRAIN_MAX_MS before the 507 went out.
      else source = req.pipe(new PassThrough());
      written = [await writeUpload(source, path, user, metadata, deps)];
    } else {
      throw new EnvdError('invalid_argument', 'Content-Type must be multipart/form-data or application/octet-stream');
    }
    sendJson(res, 200, written);
  } catch (e) {
    const err = toEnvdError(e);
    const errno = (err.cause as NodeJS.ErrnoException | undefined)?.code;
    const gunzipFailed = errno === 'Z_DATA_ERROR' || errno === 'Z_BUF_ERROR';
    await abandonBody(req, res);
    sendError(res, gunzipFailed ? new EnvdError('invalid_argument', 'body is not valid gzip') : err, deps.log);
  }
}

function multipartUpload(
  req: IncomingMessage,
  query: URLSearchParams,
  user: SandboxUser,
  metadata: Record<string, string>,
  deps: FilesDeps,
): Promise<WrittenFile[]> {
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: req.headers, preservePath: true, limits: { files: 1000, fields: 100, fieldSize: 64 * 1024 } });
    } catch {
      reject(new EnvdError('invalid_argument', 'malformed multipart request'));
      return;
    }
    const results: Promise<WrittenFile>[] = [];
    let failed = false;
    const fail = (e: unknown): void => {
      if (failed) return;
      failed = true;
      req.unpipe(bb);
      reject(e);
    };
    // Parts are written one after another, in order.
    let chain: Promise<unknown> = Promise.resolve();
    bb.on('file', (field, stream, info) => {
      if (failed || field !== 'file') {
        stream.resume();
        return;
      }
      const p = (async () => {
        const target = query.get('path') || info.filename;
        const path = resolvePath(target ?? '', user.home);
        await chain.catch(() => undefined);
        return writeUpload(stream, path, user, metadata, deps);
      })();
      p.catch((e) => {
        stream.resume();
        fail(e);
      });
      chain = p;
      results.push(p);
    });
    bb.on('error', () => fail(new EnvdError('invalid_argument', 'malformed multipart request')));
    bb.on('close', () => {
      if (failed) return;
      Promise.all(results).then((files) => {
        if (files.length === 0) fail(new EnvdError('invalid_argument', 'no file part in the multipart request'));
        else resolve(files);
      }, fail);
    });
    req.on('error', fail);
    req.pipe(bb);
  });
}

/** Runs a handler, turning thrown errors into JSON error replies. */
export async function guardHttp(res: ServerResponse, log: Logger, fn: () => Promise<void>, ring?: LogRing): Promise<void> {
  try {
    await fn();
  } catch (e) {
    sendError(res, e, log, ring);
  }
}

