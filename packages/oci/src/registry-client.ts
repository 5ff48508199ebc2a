// OCI distribution v2 client over undici: enough of pull (manifests, index → platform manifest, config, verified
// layer streams) and push (monolithic blob upload, manifest PUT) for Cove's cluster registry.

import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import { fileDigest, sha256Digest, VerifyingStream } from './digest.js';
import { DigestMismatch, ImageNotFound, RegistryAuthError, RegistryError, UnsupportedImage } from './errors.js';
import { formatImageRef, parseImageRef, type ImageRef } from './image-ref.js';

export const MediaTypes = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

const SCHEMA1 = new Set([
  'application/vnd.docker.distribution.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
]);
const INDEXES = new Set<string>([MediaTypes.ociIndex, MediaTypes.dockerList]);
const MANIFESTS = new Set<string>([MediaTypes.ociManifest, MediaTypes.dockerManifest]);
const LAYERS = new Set<string>([
  MediaTypes.ociLayer,
  MediaTypes.ociLayerGzip,
  MediaTypes.dockerLayerGzip,
  'application/vnd.docker.image.rootfs.diff.tar',
]);
/** Manifests and configs are small JSON documents; a bigger answer is refused rather than buffered. */
const MAX_DOCUMENT = 4 * 1024 * 1024;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  annotations?: Record<string, string>;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** The parts of an image config a template build uses. */
export interface ImageConfig {
  /** `Env`, in order, split at the first `=`. */
  env: Record<string, string>;
  workdir?: string;
  user?: string;
  cmd?: string[];
  entrypoint?: string[];
}

export interface ResolvedManifest {
  /** Digest of the platform manifest (not of the index it was found through). */
  digest: string;
  mediaType: string;
  config: Descriptor;
  /** Bottom → top. */
  layers: Descriptor[];
}

export interface PulledImage extends ResolvedManifest {
  repository: string;
  reference: string;
  config: Descriptor;
  imageConfig: ImageConfig;
  /** The config document as the registry holds it. */
  rawConfig: Record<string, unknown>;
}

export interface RegistryClientOptions {
  /** Base URL, e.g. `http://127.0.0.1:5000`. */
  url: string;
  username?: string;
  password?: string;
  /** Platform picked from image indexes; defaults to linux/amd64. */
  platform?: Platform;
  dispatcher?: Dispatcher;
  /** Header/body timeouts of each request (a layer stream may take longer in total). */
  timeoutMs?: number;
}

interface SendOptions {
  method?: Dispatcher.HttpMethod;
  headers?: Record<string, string>;
  body?: Buffer | Readable | string;
  /** Bearer scope for registries that use the token flow. */
  scope: string;
  /** Body can be sent again after a 401 (false for streams). */
  retryable?: boolean;
}

type Response = Dispatcher.ResponseData;

export function layerIsGzip(mediaType: string): boolean {
  return mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip');
}

export class RegistryClient {
  private readonly base: URL;
  private readonly platform: Platform;
  private readonly timeout: number;
  private readonly tokens = new Map<string, string>();

  constructor(private readonly opts: RegistryClientOptions) {
    this.base = new URL(opts.url);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') throw new Error(`registry URL must be http(s): ${opts.url}`);
    this.platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
    this.timeout = opts.timeoutMs ?? 60_000;
  }

  /** Checks that the registry answers and accepts our credentials. */
  async ping(): Promise<void> {
    const res = await this.send('/v2/', { scope: '' });
    await this.expect(res, [200], 'GET /v2/');
    await res.body.dump();
  }

  /** Resolves a reference (string or parsed) to its platform manifest, config and layers. */
  async getImage(ref: string | ImageRef): Promise<PulledImage> {
    const r = typeof ref === 'string' ? parseImageRef(ref) : ref;
    const manifest = await this.resolveManifest(r.repository, r.reference);
    const configBytes = await this.readBlob(r.repository, manifest.config, formatImageRef(r));
    let raw: Record<string, unknown>;
    try {
      raw = JSON.parse(configBytes.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new UnsupportedImage(`${formatImageRef(r)}: image config is not JSON`);
    }
    return { repository: r.repository, reference: r.reference, ...manifest, imageConfig: parseImageConfig(raw), rawConfig: raw };
  }

  /** Manifest for our platform: follows an image index one level down. */
  async resolveManifest(repository: string, reference: string): Promise<ResolvedManifest> {
    const name = `${repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`;
    let doc = await this.getManifestDocument(repository, reference, name);
    if (INDEXES.has(doc.mediaType)) {
      const list = (doc.json.manifests ?? []) as Descriptor[];
      const want = this.platform;
      const match = list.find(
        (m) =>
          m.platform?.os === want.os &&
          m.platform?.architecture === want.architecture &&
          (want.variant === undefined || m.platform?.variant === want.variant),
      );
      if (!match) throw new ImageNotFound(name, `no ${want.os}/${want.architecture} manifest`);
      doc = await this.getManifestDocument(repository, match.digest, name);
      if (INDEXES.has(doc.mediaType)) throw new UnsupportedImage(`${name}: nested image index`);
    }
    if (!MANIFESTS.has(doc.mediaType)) throw new UnsupportedImage(`${name}: unsupported manifest type ${doc.mediaType}`);
    const config = doc.json.config as Descriptor | undefined;
    const layers = (doc.json.layers ?? []) as Descriptor[];
    if (!config || typeof config.digest !== 'string') throw new UnsupportedImage(`${name}: manifest without config`);
    for (const l of layers) {
      if (typeof l.digest !== 'string' || typeof l.size !== 'number') throw new UnsupportedImage(`${name}: malformed layer descriptor`);
      if (!LAYERS.has(l.mediaType)) throw new UnsupportedImage(`${name}: unsupported layer type ${l.mediaType}`);
    }
    return { digest: doc.digest, mediaType: doc.mediaType, config, layers };
  }

  /** A blob as a stream that errors (DigestMismatch) unless its bytes hash to `digest`. */
  async openBlob(repository: string, blob: { digest: string; size?: number }): Promise<Readable> {
    const verifier = new VerifyingStream(blob.digest, blob.size);
    const res = await this.getFollowing(`/v2/${repository}/blobs/${blob.digest}`, `repository:${repository}:pull`);
    if (res.statusCode === 404) {
      await res.body.dump();
      throw new ImageNotFound(repository, `blob ${blob.digest} unknown`);
    }
    await this.expect(res, [200], `GET blob ${blob.digest}`);
    res.body.on('error', (err) => verifier.destroy(err));
    return res.body.pipe(verifier);
  }

  async hasManifest(repository: string, reference: string): Promise<boolean> {
    const res = await this.send(`/v2/${repository}/manifests/${reference}`, {
      method: 'HEAD',
      headers: { accept: [...INDEXES, ...MANIFESTS].join(', ') },
      scope: `repository:${repository}:pull`,
    });
    await res.body.dump();
    if (res.statusCode === 404) return false;
    await this.expect(res, [200], `HEAD manifest ${repository}:${reference}`);
    return true;
  }

  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const res = await this.send(`/v2/${repository}/blobs/${digest}`, { method: 'HEAD', scope: `repository:${repository}:pull` });
    await res.body.dump();
    if (res.statusCode === 404) return false;
    await this.expect(res, [200, 307], `HEAD blob ${digest}`);
    return true;
  }

  /**
   * Uploads a blob in one PUT (POST for a session, then PUT with the digest) unless the registry has it.
   * A file is streamed, never buffered.
   */
  async pushBlob(repository: string, source: Buffer | { path: string }): Promise<{ digest: string; size: number }> {
    const { digest, size } = Buffer.isBuffer(source) ? { digest: sha256Digest(source), size: source.length } : await fileDigest(source.path);
    if (await this.hasBlob(repository, digest)) return { digest, size };
    const scope = `repository:${repository}:pull,push`;
    const start = await this.send(`/v2/${repository}/blobs/uploads/`, { method: 'POST', scope, headers: { 'content-length': '0' } });
    await this.expect(start, [202], `start upload to ${repository}`);
    await start.body.dump();
    const location = start.headers.location;
    if (typeof location !== 'string') throw new RegistryError(start.statusCode, 'upload session without Location');
    const url = new URL(location, this.base);
    url.searchParams.set('digest', digest);
    const body = Buffer.isBuffer(source) ? source : createReadStream(source.path);
    const put = await this.send(url.toString(), {
      method: 'PUT',
      scope,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body,
      retryable: Buffer.isBuffer(source),
    });
    await this.expect(put, [201], `upload ${digest}`);
    await put.body.dump();
    return { digest, size };
  }

  /** PUTs a manifest under a tag (or its digest); returns the manifest digest. */
  async pushManifest(repository: string, reference: string, manifest: Buffer | object, mediaType: string): Promise<string> {
    const bytes = Buffer.isBuffer(manifest) ? manifest : Buffer.from(JSON.stringify(manifest));
    const res = await this.send(`/v2/${repository}/manifests/${reference}`, {
      method: 'PUT',
      scope: `repository:${repository}:pull,push`,
      headers: { 'content-type': mediaType, 'content-length': String(bytes.length) },
      body: bytes,
    });
    await this.expect(res, [201], `PUT manifest ${repository}:${reference}`);
    await res.body.dump();
    return sha256Digest(bytes);
  }

  private async getManifestDocument(
    repository: string,
    reference: string,
    name: string,
  ): Promise<{ digest: string; mediaType: string; json: Record<string, unknown> }> {
    const res = await this.send(`/v2/${repository}/manifests/${reference}`, {
      headers: { accept: [...INDEXES, ...MANIFESTS, ...SCHEMA1].join(', ') },
      scope: `repository:${repository}:pull`,
    });
    if (res.statusCode === 404) {
      await res.body.dump();
      throw new ImageNotFound(name);
    }
    await this.expect(res, [200], `GET manifest ${name}`);
    const bytes = await readLimited(res, MAX_DOCUMENT, `manifest of ${name}`);
    const digest = sha256Digest(bytes);
    if (reference.startsWith('sha256:') && digest !== reference) throw new DigestMismatch(reference, digest);
    const announced = res.headers['docker-content-digest'];
    if (typeof announced === 'string' && announced.startsWith('sha256:') && announced !== digest) throw new DigestMismatch(announced, digest);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new UnsupportedImage(`${name}: manifest is not JSON`);
    }
    const contentType = String(res.headers['content-type'] ?? '').split(';')[0].trim();
    // OCI allows mediaType to be absent from the document; then the header or the shape decides.
    let mediaType = typeof json.mediaType === 'string' ? json.mediaType : contentType;
    if (!INDEXES.has(mediaType) && !MANIFESTS.has(mediaType) && !SCHEMA1.has(mediaType)) {
      if (Array.isArray(json.manifests)) mediaType = MediaTypes.ociIndex;
      else if (Array.isArray(json.layers)) mediaType = MediaTypes.ociManifest;
    }
    if (SCHEMA1.has(mediaType) || json.schemaVersion === 1) throw new UnsupportedImage(`${name}: Docker schema 1 manifests are not supported`);
    return { digest, mediaType, json };
  }

  private async readBlob(repository: string, blob: Descriptor, name: string): Promise<Buffer> {
    if (blob.size > MAX_DOCUMENT) throw new UnsupportedImage(`${name}: config blob of ${blob.size} bytes is too large`);
    const stream = await this.openBlob(repository, blob);
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** GET that follows redirects (a registry may send blobs from elsewhere), without credentials off-origin. */
  private async getFollowing(path: string, scope: string): Promise<Response> {
    let res = await this.send(path, { scope });
    for (let hops = 0; hops < 5 && [301, 302, 303, 307, 308].includes(res.statusCode); hops++) {
      await res.body.dump();
      const loc = res.headers.location;
      if (typeof loc !== 'string') throw new RegistryError(res.statusCode, 'redirect without Location');
      const next = new URL(loc, this.base);
      res =
        next.origin === this.base.origin
          ? await this.send(next.toString(), { scope })
          : await request(next, { dispatcher: this.opts.dispatcher, headersTimeout: this.timeout, bodyTimeout: this.timeout });
    }
    return res;
  }

  private async send(pathOrUrl: string, o: SendOptions): Promise<Response> {
    const url = new URL(pathOrUrl, this.base);
    const attempt = async (): Promise<Response> => {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      const token = this.tokens.get(o.scope);
      if (token) headers.authorization = `Bearer ${token}`;
      else if (this.opts.username !== undefined) headers.authorization = basic(this.opts.username, this.opts.password ?? '');
      return request(url, {
        method: o.method ?? 'GET',
        headers,
        body: o.body,
        dispatcher: this.opts.dispatcher,
        headersTimeout: this.timeout,
        bodyTimeout: this.timeout,
      });
    };
    let res = await attempt();
    if (res.statusCode === 401 && !this.tokens.has(o.scope)) {
      const challenge = String(res.headers['www-authenticate'] ?? '');
      if (/^bearer\s/i.test(challenge) && o.retryable !== false && !(o.body && typeof o.body !== 'string' && !Buffer.isBuffer(o.body))) {
        await res.body.dump();
        await this.fetchToken(challenge, o.scope);
        res = await attempt();
      }
    }
    return res;
  }

  /** The registry token flow: GET realm?service&scope with our basic credentials, keep the token per scope. */
  private async fetchToken(challenge: string, scope: string): Promise<void> {
    const params: Record<string, string> = {};
    for (const m of challenge.replace(/^bearer\s+/i, '').matchAll(/(\w+)="([^"]*)"/g)) params[m[1]] = m[2];
    if (!params.realm) throw new RegistryAuthError(401, 'bearer challenge without realm');
    const url = new URL(params.realm);
    if (params.service) url.searchParams.set('service', params.service);
    const s = scope || params.scope;
    if (s) url.searchParams.set('scope', s);
    const headers: Record<string, string> = {};
    if (this.opts.username !== undefined) headers.authorization = basic(this.opts.username, this.opts.password ?? '');
    const res = await request(url, { headers, dispatcher: this.opts.dispatcher, headersTimeout: this.timeout, bodyTimeout: this.timeout });
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new RegistryAuthError(res.statusCode, `token service refused the credentials`);
    }
    const body = JSON.parse((await readLimited(res, MAX_DOCUMENT, 'token')).toString('utf8')) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryAuthError(401, 'token service answered without a token');
    this.tokens.set(scope, token);
  }

  private async expect(res: Response, ok: number[], what: string): Promise<void> {
    if (ok.includes(res.statusCode)) return;
    // (A HEAD answer has an empty body: this reads nothing.)
    const text = (await readLimited(res, 64 * 1024, what).catch(() => Buffer.alloc(0))).toString('utf8');
    const detail = registryErrorText(text) ?? (text.slice(0, 200) || 'no details');
    if (res.statusCode === 401) {
      throw new RegistryAuthError(401, this.opts.username === undefined ? 'the registry requires credentials' : `credentials refused (${detail})`);
    }
    if (res.statusCode === 403) throw new RegistryAuthError(403, `access denied (${detail})`);
    throw new RegistryError(res.statusCode, `${what}: HTTP ${res.statusCode}: ${detail}`);
  }
}

function basic(user: string, pass: string): string {
  return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
}

/** Registry errors come as {"errors":[{"code","message"}]}. */
function registryErrorText(text: string): string | undefined {
  try {
    const j = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    if (Array.isArray(j.errors) && j.errors.length > 0) return j.errors.map((e) => `${e.code}: ${e.message}`).join('; ');
  } catch {
    /* not JSON */
  }
  return undefined;
}

async function readLimited(res: Response, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > limit) {
      res.body.destroy();
      throw new UnsupportedImage(`${what} is larger than ${limit} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

export function parseImageConfig(raw: Record<string, unknown>): ImageConfig {
  const c = (raw.config ?? {}) as Record<string, unknown>;
  const strings = (v: unknown): string[] | undefined => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined);
  const env: Record<string, string> = {};
  for (const kv of strings(c.Env) ?? []) {
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const out: ImageConfig = { env };
  const workdir = str(c.WorkingDir);
  const user = str(c.User);
  const cmd = strings(c.Cmd);
  const entrypoint = strings(c.Entrypoint);
  if (workdir) out.workdir = workdir;
  if (user) out.user = user;
  if (cmd) out.cmd = cmd;
  if (entrypoint) out.entrypoint = entrypoint;
  return out;
}
