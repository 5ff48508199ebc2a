// User template → what a slot boots on: the build's manifest (from cluster storage, cached in memory since a
// manifest never changes) and its layers extracted on this node, as a lower-dir stack (top first, the built-in
// rootfs last when the build sits on one).

import type { BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import { OrchestratorError } from '../errors.js';
import { LayerCorrupt, LayerMissing, type LayerCache, type LayerLease } from './layer-cache.js';
import { BUILD_ID_RE, ManifestInvalid, readManifest, type BuildManifest } from './manifest.js';

/** The build cannot be run here: no manifest, another template's build, a missing or corrupt layer. NOT_FOUND. */
export class BuildNotFound extends OrchestratorError {
  constructor(readonly templateId: string, readonly buildId: string, reason: string, options?: ErrorOptions) {
    super('template_not_found', `template ${templateId} build ${buildId}: ${reason}`, options);
  }
}

export interface ResolvedBuild {
  /** Overlay lower dirs, top first (BootOptions.layers). */
  layers: string[];
  manifest: BuildManifest;
  /**
   * Pins the layers until the slot booted on them exists (its record protects them from then on). Call it
   * once the boot returned or failed.
   */
  release(): void;
}

export interface TemplateResolverOptions {
  store: BlobStore;
  cache: LayerCache;
  /** The runtime's SandboxRuntime.builtinRootfs. */
  builtinRootfs: (templateId: string) => Promise<string | null>;
  log: Logger;
}

export class TemplateResolver {
  private readonly manifests = new Map<string, BuildManifest>();

  constructor(private readonly opts: TemplateResolverOptions) {}

  /** The build's manifest (cached once read); BuildNotFound when absent, invalid or another template's. */
  async manifest(templateId: string, buildId: string): Promise<BuildManifest> {
    if (!BUILD_ID_RE.test(buildId)) throw new BuildNotFound(templateId, buildId.slice(0, 64), 'bad build id');
    let m = this.manifests.get(buildId);
    if (!m) {
      let read: BuildManifest | null;
      try {
        read = await readManifest(this.opts.store, buildId);
      } catch (err) {
        if (err instanceof ManifestInvalid) throw new BuildNotFound(templateId, buildId, 'its manifest is invalid', { cause: err });
        throw err;
      }
      // Absence is not cached: the build may become ready any moment.
      if (!read) throw new BuildNotFound(templateId, buildId, 'no such build (or not ready)');
      m = read;
      this.manifests.set(buildId, m);
    }
    if (m.templateId !== templateId) throw new BuildNotFound(templateId, buildId, 'the build belongs to another template');
    return m;
  }

  async resolve(templateId: string, buildId: string): Promise<ResolvedBuild> {
    const manifest = await this.manifest(templateId, buildId);
    const digests = manifest.layers.map((l) => l.digest);
    const lease: LayerLease = this.opts.cache.acquire(digests);
    try {
      const dirs = await Promise.all(digests.map((d) => this.opts.cache.ensure(d)));
      const layers = dirs.reverse();
      if (manifest.base) {
        const rootfs = await this.opts.builtinRootfs(manifest.base.id);
        if (!rootfs) throw new BuildNotFound(templateId, buildId, `its base template ${manifest.base.id} is not on this node`);
        layers.push(rootfs);
      }
      return { layers, manifest, release: () => lease.release() };
    } catch (err) {
      lease.release();
      if (err instanceof LayerMissing || err instanceof LayerCorrupt) {
        this.opts.log.warn({ err, templateId, buildId }, 'layer of a build unusable');
        throw new BuildNotFound(templateId, buildId, err.message, { cause: err });
      }
      throw err;
    }
  }
}
