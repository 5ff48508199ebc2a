// Builds an OCI image manifest + config around ready layer tarballs and pushes it: how `cove up` seeds the
// cluster registry, and how tests make images without any image hub.

import { createHash } from 'node:crypto';
import { createReadStream, openSync, readSync, closeSync } from 'node:fs';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { MediaTypes, type Descriptor, type RegistryClient } from './registry-client.js';

export type LayerSource = { data: Buffer } | { path: string };

export interface PushImageOptions {
  repository: string;
  /** Every tag the manifest is put under. */
  tags: string[];
  /** Bottom → top; plain or gzipped tars (told apart by their first bytes). */
  layers: LayerSource[];
  config?: { env?: string[]; cmd?: string[]; entrypoint?: string[]; workingDir?: string; user?: string };
  architecture?: string;
  os?: string;
  /** Fixed creation time keeps the config (so the manifest digest) reproducible. */
  created?: string;
}

export interface PushedImage {
  manifestDigest: string;
  manifest: Record<string, unknown>;
  config: Descriptor;
  layers: Descriptor[];
}

function isGzip(src: LayerSource): boolean {
  let head: Buffer;
  if ('data' in src) head = src.data.subarray(0, 2);
  else {
    head = Buffer.alloc(2);
    const fd = openSync(src.path, 'r');
    try {
      readSync(fd, head, 0, 2, 0);
    } finally {
      closeSync(fd);
    }
  }
  return head[0] === 0x1f && head[1] === 0x8b;
}

/** sha256 of the uncompressed tar: the config's `rootfs.diff_ids` entry. */
async function diffId(src: LayerSource, gzip: boolean): Promise<string> {
  const h = createHash('sha256');
  const raw = 'data' in src ? Readable.from([src.data]) : createReadStream(src.path);
  const stream = gzip ? raw.pipe(createGunzip()) : raw;
  raw.on('error', (e: Error) => stream.destroy(e));
  for await (const c of stream) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

export async function pushImage(client: RegistryClient, o: PushImageOptions): Promise<PushedImage> {
  if (o.tags.length === 0) throw new Error('pushImage needs at least one tag');
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const src of o.layers) {
    const gzip = isGzip(src);
    diffIds.push(await diffId(src, gzip));
    const { digest, size } = await client.pushBlob(o.repository, 'data' in src ? src.data : { path: src.path });
    layers.push({ mediaType: gzip ? MediaTypes.ociLayerGzip : MediaTypes.ociLayer, digest, size });
  }
  const c = o.config ?? {};
  const configDoc = {
    created: o.created ?? '1970-01-01T00:00:00Z',
    architecture: o.architecture ?? 'amd64',
    os: o.os ?? 'linux',
    config: {
      ...(c.env ? { Env: c.env } : {}),
      ...(c.cmd ? { Cmd: c.cmd } : {}),
      ...(c.entrypoint ? { Entrypoint: c.entrypoint } : {}),
      ...(c.workingDir ? { WorkingDir: c.workingDir } : {}),
      ...(c.user ? { User: c.user } : {}),
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
  };
  const configBytes = Buffer.from(JSON.stringify(configDoc));
  const cfg = await client.pushBlob(o.repository, configBytes);
  const config: Descriptor = { mediaType: MediaTypes.ociConfig, digest: cfg.digest, size: cfg.size };
  const manifest = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers };
  let manifestDigest = '';
  for (const tag of o.tags) manifestDigest = await client.pushManifest(o.repository, tag, manifest, MediaTypes.ociManifest);
  return { manifestDigest, manifest, config, layers };
}
