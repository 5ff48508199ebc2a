// fromImage: the image's layers through the cluster's OCI registry (@cove/oci), each converted once into a
// Cove layer (importLayer: whiteouts → overlay form, owners shifted) and remembered under
// `templates/image-layers/<ociDigest>.json`, so every later build (any node) reuses the converted layer.
// As E2B's base phase does, the build context starts as root without a workdir, with the image's Env.

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { importLayer, RegistryClient } from '@cove/oci';
import { BlobNotFound, hasArtifact, putArtifact, type BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import { LAYER_TAR_FLAGS } from '../sandbox/layer-export.js';
import type { LayerCache } from '../templates/layer-cache.js';
import type { ImageBaseResolver, Layer } from './build-engine.js';

const pexec = promisify(execFile);

export interface RegistryImageBaseOptions {
  /** The cluster registry, e.g. `http://127.0.0.1:5000`. */
  url: string;
  username?: string | undefined;
  password?: string | undefined;
  store: BlobStore;
  layers: LayerCache;
  workDir: string;
  /** Host uid of root inside sandboxes (the runtime's idOffset). */
  idOffset: number;
  log: Logger;
}

export function imageLayerKey(ociDigest: string): string {
  return `templates/image-layers/${ociDigest.replace(/^sha256:/, '')}.json`;
}

async function readLayerEntry(store: BlobStore, key: string): Promise<Layer | null> {
  try {
    const chunks: Buffer[] = [];
    for await (const c of await store.get(key)) chunks.push(c as Buffer);
    const o = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Partial<Layer>;
    return typeof o.digest === 'string' && /^[0-9a-f]{64}$/.test(o.digest) && typeof o.size === 'number' ? { digest: o.digest, size: o.size } : null;
  } catch (err) {
    if (err instanceof BlobNotFound || err instanceof SyntaxError) return null;
    throw err;
  }
}

export class RegistryImageBase implements ImageBaseResolver {
  constructor(private readonly o: RegistryImageBaseOptions) {}

  async resolve(ref: string, registry: { username: string; password: string } | undefined, say: (line: string) => void) {
    // Credentials from the build request win (a private repository); else the node's own for the cluster registry.
    const client = new RegistryClient({
      url: this.o.url,
      username: registry?.username ?? this.o.username,
      password: registry?.password ?? this.o.password,
    });
    const img = await client.getImage(ref);
    say(`image ${ref} resolved to ${img.digest} (${img.layers.length} layers)`);
    const layers: Layer[] = [];
    for (const d of img.layers) {
      const key = imageLayerKey(d.digest);
      const known = await readLayerEntry(this.o.store, key);
      if (known && (await hasArtifact(this.o.store, known.digest))) {
        layers.push(known);
        continue;
      }
      say(`converting layer ${d.digest} (${d.size} bytes)`);
      const layer = await this.convert(client, img.repository, d);
      await this.o.store.put(key, Buffer.from(JSON.stringify(layer)));
      layers.push(layer);
    }
    return { digest: img.digest, layers, env: img.imageConfig.env };
  }

  private async convert(client: RegistryClient, repository: string, d: { digest: string; size: number }): Promise<Layer> {
    const work = await mkdtemp(join(this.o.workDir, 'img-'));
    const dir = join(work, 'upper');
    const tarFile = join(work, 'layer.tar');
    try {
      await importLayer(await client.openBlob(repository, d), dir, { idOffset: this.o.idOffset });
      // Members relative to the dir without a `./` root entry, as runtime exports are (layer-export.ts).
      const names = (await readdir(dir)).sort();
      // A layer that held only what the runtime provides (its /etc/hosts, say) is empty here: GNU tar refuses to
      // make an empty archive from no names, but writes one from an empty name list.
      const members = names.length ? ['--', ...names] : ['-T', '/dev/null'];
      await pexec('tar', ['-c', '-f', tarFile, '-C', dir, ...LAYER_TAR_FLAGS, ...members], { maxBuffer: 1024 * 1024 });
      const h = createHash('sha256');
      await pipeline(createReadStream(tarFile), async function* (src) {
        for await (const c of src) h.update(c as Buffer);
      });
      const sha256 = h.digest('hex');
      const { size } = await stat(tarFile);
      await putArtifact(this.o.store, createReadStream(tarFile), { sha256, size });
      await this.o.layers.adopt(sha256, tarFile);
      return { digest: sha256, size };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
}
