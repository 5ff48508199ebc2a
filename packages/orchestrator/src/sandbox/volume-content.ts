// The volume content API on the node (docs/volumes.md, "Content API"): E2B's `/volumecontent/{volumeID}/…`
// routes as the edge forwards them to the node proxy, after the control plane has checked the volume's token
// and that no sandbox holds it (the edge sets the quota it learnt in `cove-volume-quota`). Every file operation
// runs in the native volume-fs helper (native/volume-fs.c): the image is mounted only in the helper's own mount
// namespace, and every lookup refuses links, so nothing inside the volume can point this node at a host file.
// Node's fs never sees a path inside a volume.

import { spawn } from 'node:child_process';
import { mkdir, readdir, rm } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VOLUME_QUOTA_HEADER } from '@cove/contracts/sandbox';
import type { Logger } from 'pino';
import { z } from 'zod';
import { run } from './run-command.js';
import { ensureVolumeImage, MAX_VOLUME_QUOTA_BYTES, MIN_VOLUME_QUOTA_BYTES, VOLUME_ID_RE, volumeImageOf } from './slot-volumes.js';

/** dist/src/sandbox/volume-content.js → dist/native/volume-fs (built by `npm run build:native`). */
const HELPER = fileURLToPath(new URL('../../native/volume-fs', import.meta.url));

/** The sandbox's default user (`user`, uid 1000 inside): what new files belong to unless the caller says. */
const DEFAULT_OWNER = 1000;
/** One user namespace's worth of ids above the node's offset; anything else on disk reads as nobody. */
const ID_RANGE = 65536;
const NOBODY = 65534;
const MAX_LIST_ENTRIES = 10_000;
const MAX_LIST_DEPTH = 16;
/** The helper's listing output is bounded by the entry count; this guards against a broken helper. */
const MAX_LIST_OUTPUT = 64 * 1024 * 1024;

/** The helper's exit codes (native/volume-fs.c) as HTTP answers. */
const EXITS: Record<number, { status: number; code: string; message: string }> = {
  2: { status: 400, code: 'volume_bad_request', message: 'invalid request' },
  3: { status: 404, code: 'volume_path_not_found', message: 'path not found' },
  4: { status: 400, code: 'volume_path_link', message: 'the path goes through a symbolic link or a mount; links in a volume are not followed' },
  5: { status: 413, code: 'volume_file_too_large', message: 'larger than the volume allows' },
  6: { status: 409, code: 'volume_path_exists', message: 'the path already exists' },
  7: { status: 409, code: 'volume_in_use', message: 'the volume is mounted by a running sandbox; kill that sandbox first' },
  8: { status: 507, code: 'volume_full', message: 'no space left: the volume is full (its size is its quota)' },
  9: { status: 400, code: 'volume_wrong_type', message: 'a file where a directory is needed, or a directory where a file is' },
  10: { status: 400, code: 'volume_too_many_entries', message: `more than ${MAX_LIST_ENTRIES} entries; list a subdirectory or with less depth` },
};

export interface VolumeContentOptions {
  volumesDir: string | undefined;
  /** Where the helper mounts images, inside its own namespace (the directory itself stays empty on the host). */
  mountDir: string;
  /** The sandboxes' uid/gid offset: ids inside a sandbox are `on disk - idOffset`. */
  idOffset: number;
  log: Logger;
}

class ContentError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const Id = z.coerce.number().int().min(0).max(ID_RANGE - 1);
const Mode = z.coerce.number().int().min(0).max(0o7777);
const Bool = z.enum(['true', 'false']).transform((v) => v === 'true');
const PathQuery = z.object({ path: z.string().max(4096) });
const ListQuery = PathQuery.extend({ depth: z.coerce.number().int().min(1).max(MAX_LIST_DEPTH).optional() });
const WriteQuery = PathQuery.extend({ uid: Id.optional(), gid: Id.optional(), mode: Mode.optional(), force: Bool.optional() });
const MetaBody = z.object({ uid: Id.optional(), gid: Id.optional(), mode: Mode.optional() }).strict();

function parse<T extends z.ZodTypeAny>(schema: T, value: unknown, where: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new ContentError(400, 'volume_bad_request', `${where}: ${issue?.path.join('.') || 'value'}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data as z.infer<T>;
}

/** The API's path as the helper wants it: relative to the volume root, normalised, never escaping it. */
export function volumeRelativePath(path: string): string {
  if (path.includes('\0')) throw new ContentError(400, 'volume_bad_request', 'path must not contain NUL');
  const segments = path.replace(/\\/g, '/').split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) throw new ContentError(400, 'volume_bad_request', 'path must not contain ".."');
  return posix.join(...['.', ...segments]).replace(/^\.\/?/, '');
}

interface Entry {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'unknown';
  path: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  atime: string;
  mtime: string;
  ctime: string;
  target?: string;
}

const TYPES = { f: 'file', d: 'directory', l: 'symlink', u: 'unknown' } as const;

export class VolumeContent {
  constructor(private readonly o: VolumeContentOptions) {}

  private toApiId(disk: number): number {
    const id = disk - this.o.idOffset;
    return id >= 0 && id < ID_RANGE ? id : NOBODY;
  }

  private parseEntries(out: string): Entry[] {
    return out
      .split('\n')
      .filter((l) => l !== '')
      .map((line) => {
        const [t, mode, uid, gid, size, at, mt, ct, path, target] = line.split(' ');
        const rel = Buffer.from(path ?? '', 'hex').toString('utf8');
        const iso = (n: string | undefined) => new Date(Number(BigInt(n ?? '0') / 1_000_000n)).toISOString();
        const linkTarget = target ? Buffer.from(target, 'hex').toString('utf8') : '';
        return {
          name: rel === '' ? '/' : posix.basename(rel),
          type: TYPES[t as keyof typeof TYPES] ?? 'unknown',
          path: `/${rel}`,
          size: Number(size),
          mode: parseInt(mode ?? '0', 8),
          uid: this.toApiId(Number(uid)),
          gid: this.toApiId(Number(gid)),
          atime: iso(at),
          mtime: iso(mt),
          ctime: iso(ct),
          ...(linkTarget ? { target: linkTarget } : {}),
        };
      });
  }

  /** Runs the helper; resolves its stdout (at most `maxOut` bytes), or rejects with the mapped ContentError. */
  private run(image: string, args: string[], input: IncomingMessage | null, maxOut: number, onData?: (chunk: Buffer) => boolean): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const child = spawn(HELPER, [image, this.o.mountDir, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
      const out: Buffer[] = [];
      let outBytes = 0;
      let err = '';
      child.stdout.on('data', (c: Buffer) => {
        if (onData?.(c)) return;
        outBytes += c.length;
        if (outBytes <= maxOut) out.push(c);
        else child.kill('SIGKILL');
      });
      child.stderr.setEncoding('utf8').on('data', (c: string) => {
        if (err.length < 2048) err += c;
      });
      child.on('error', reject);
      child.on('close', (code) => {
        if (code === 0 && outBytes <= maxOut) return resolve(Buffer.concat(out));
        const known = code === null ? undefined : EXITS[code];
        if (!known) this.o.log.warn({ code, stderr: err.trim() }, 'volume-fs failed');
        const e = known ?? { status: 500, code: 'volume_content_failed', message: 'the volume operation failed' };
        reject(new ContentError(e.status, e.code, `${args[0]} ${args[1] ? `/${args[1]}` : '/'}: ${e.message}`));
      });
      child.stdin.on('error', () => undefined); // an early exit closes the pipe; the exit code says why
      if (input) {
        input.pipe(child.stdin);
        input.on('error', () => child.kill('SIGKILL'));
      } else {
        child.stdin.end();
      }
    });
  }

  /** Ids of the volume images in the (shared) volume dir. */
  private async imageIds(): Promise<string[]> {
    const names = await readdir(this.o.volumesDir!).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    return names.flatMap((n) => {
      const id = n.endsWith('.ext4') ? n.slice(0, -'.ext4'.length) : '';
      return VOLUME_ID_RE.test(id) ? [id] : [];
    });
  }

  /**
   * Deletes a destroyed volume's image (the edge's sweep asks only for ids the control plane no longer has).
   * Under the image's lock, so a content operation that began before the destroy finishes first; a name
   * that is not a volume id's is refused, so nothing else in the dir can be named.
   */
  private async removeImage(volumeId: string): Promise<void> {
    if (!VOLUME_ID_RE.test(volumeId)) throw new ContentError(404, 'volume_not_found', 'volume not found');
    const image = volumeImageOf(this.o.volumesDir!, volumeId);
    try {
      await run('flock', ['-w', '60', image, 'rm', '-f', '--', image]);
    } catch (err) {
      // flock(1) creates a missing file to lock it; nothing was there, so what it made goes too.
      this.o.log.warn({ err, volumeId }, 'volume image not removed');
      throw new ContentError(500, 'volume_content_failed', 'the image could not be removed');
    }
    await rm(image, { force: true });
  }

  /** Answers one `/volumecontent/…` request (the node proxy has checked the node token). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      await this.serve(req, res);
    } catch (err) {
      if (!(err instanceof ContentError)) this.o.log.error({ err }, 'volume content request failed');
      const e = err instanceof ContentError ? err : new ContentError(500, 'volume_content_failed', 'the volume operation failed');
      req.resume();
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendJson(res, e.status, { code: e.status, message: e.message, error_code: e.code });
    }
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.o.volumesDir) throw new ContentError(503, 'volumes_unavailable', 'this node has no volume directory (COVE_VOLUMES_DIR)');
    const url = new URL(req.url ?? '/', 'http://node');
    if (url.pathname === '/volumeimages' && req.method === 'GET') return sendJson(res, 200, { volumeIDs: await this.imageIds() });
    const img = /^\/volumeimages\/([^/]+)$/.exec(url.pathname);
    if (img && req.method === 'DELETE') {
      await this.removeImage(img[1]!);
      res.writeHead(204).end();
      return;
    }
    const m = /^\/volumecontent\/([^/]+)\/(dir|path|file)$/.exec(url.pathname);
    if (!m) throw new ContentError(404, 'not_found', `route ${req.method} ${url.pathname} not found`);
    const [, volumeId, kind] = m as unknown as [string, string, 'dir' | 'path' | 'file'];
    if (!VOLUME_ID_RE.test(volumeId)) throw new ContentError(404, 'volume_not_found', 'volume not found');
    const quota = Number(req.headers[VOLUME_QUOTA_HEADER]);
    if (!Number.isSafeInteger(quota) || quota < MIN_VOLUME_QUOTA_BYTES || quota > MAX_VOLUME_QUOTA_BYTES) {
      throw new ContentError(400, 'volume_bad_request', `missing or invalid ${VOLUME_QUOTA_HEADER}`);
    }
    const query = Object.fromEntries(url.searchParams);
    const image = volumeImageOf(this.o.volumesDir, volumeId);
    // The dirs first: on a fresh node the content API can be the first user of the volume dir.
    await mkdir(this.o.volumesDir, { recursive: true, mode: 0o700 });
    await mkdir(this.o.mountDir, { recursive: true, mode: 0o700 });
    // A volume no sandbox has mounted yet has no image: made now, like its first mount would.
    await ensureVolumeImage(image, quota, this.o.idOffset + DEFAULT_OWNER);
    const disk = (id: number | undefined) => String((id ?? DEFAULT_OWNER) + this.o.idOffset);
    const route = `${req.method} ${kind}`;
    switch (route) {
      case 'GET dir': {
        const q = parse(ListQuery, query, 'query');
        const out = await this.run(image, ['list', volumeRelativePath(q.path), String(q.depth ?? 1), String(MAX_LIST_ENTRIES)], null, MAX_LIST_OUTPUT);
        return sendJson(res, 200, this.parseEntries(out.toString('utf8')));
      }
      case 'POST dir': {
        const q = parse(WriteQuery, query, 'query');
        const rel = nonRoot(q.path);
        const out = await this.run(image, ['mkdir', rel, disk(q.uid), disk(q.gid), String(q.mode ?? 0o755), q.force ? '1' : '0'], null, 64 * 1024);
        return sendJson(res, 201, this.parseEntries(out.toString('utf8'))[0]);
      }
      case 'GET path': {
        const q = parse(PathQuery, query, 'query');
        const out = await this.run(image, ['stat', volumeRelativePath(q.path)], null, 64 * 1024);
        return sendJson(res, 200, this.parseEntries(out.toString('utf8'))[0]);
      }
      case 'PATCH path': {
        const q = parse(PathQuery, query, 'query');
        const body = parse(MetaBody, await readJson(req), 'body');
        const keep = (id: number | undefined) => (id === undefined ? '-1' : String(id + this.o.idOffset));
        const out = await this.run(image, ['meta', volumeRelativePath(q.path), keep(body.uid), keep(body.gid), body.mode === undefined ? '-1' : String(body.mode)], null, 64 * 1024);
        return sendJson(res, 200, this.parseEntries(out.toString('utf8'))[0]);
      }
      case 'DELETE path': {
        const q = parse(PathQuery, query, 'query');
        await this.run(image, ['remove', nonRoot(q.path)], null, 0);
        res.writeHead(204).end();
        return;
      }
      case 'GET file': {
        const q = parse(PathQuery, query, 'query');
        // Streamed: headers go with the first byte, so an error before it is still a clean JSON answer.
        let started = false;
        await this.run(image, ['read', nonRoot(q.path), String(quota)], null, 0, (chunk) => {
          if (!started) {
            started = true;
            res.writeHead(200, { 'content-type': 'application/octet-stream' });
          }
          res.write(chunk);
          return true;
        });
        if (!started) res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '0' });
        res.end();
        return;
      }
      case 'PUT file': {
        const q = parse(WriteQuery, query, 'query');
        const rel = nonRoot(q.path);
        const length = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
        if (length !== undefined && length > quota) {
          throw new ContentError(413, 'volume_file_too_large', `${length} bytes is more than the volume's quota of ${quota} bytes`);
        }
        const out = await this.run(image, ['write', rel, disk(q.uid), disk(q.gid), String(q.mode ?? 0o644), String(quota)], req, 64 * 1024);
        return sendJson(res, 200, this.parseEntries(out.toString('utf8'))[0]);
      }
      default:
        throw new ContentError(405, 'method_not_allowed', `${req.method} is not allowed on /volumecontent/{volumeID}/${kind}`);
    }
  }
}

function nonRoot(path: string): string {
  const rel = volumeRelativePath(path);
  if (rel === '') throw new ContentError(400, 'volume_bad_request', 'path must name something below the volume root');
  return rel;
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > 16 * 1024) throw new ContentError(413, 'volume_bad_request', 'request body is too large');
    chunks.push(c);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
  } catch {
    throw new ContentError(400, 'volume_bad_request', 'request body is not valid JSON');
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Where volume-fs mounts images (in its own namespace): under the node's data dir. */
export const volumeMountDir = (dataDir: string): string => join(dataDir, 'volume-content');
