// Wires the build engine from the node's parts (app.ts calls this once): cluster storage, the layer cache,
// the runtime, the registry for image builds, and the sandbox manager (drain state, builds in use).

import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BlobStore } from '@cove/storage';
import type { Logger } from 'pino';
import type { LayerCache } from '../templates/layer-cache.js';
import { BuildManager, type BuildManagerOptions } from './build-manager.js';
import type { BuildRuntime } from './build-sandbox.js';
import { RegistryImageBase } from './image-base.js';

export interface TemplateBuildsOptions {
  dataDir: string;
  runtime: BuildRuntime;
  store: BlobStore;
  layerCache: LayerCache;
  registry: { url: string | undefined; username: string | undefined; password: string | undefined };
  defaults: { vcpu: number; memoryMb: number; diskMb: number };
  /** Host size: a build may ask for at most this much. */
  cpuCount: number;
  memoryMb: number;
  /** Builds at once on this node; default 2 (builds share the node with sandboxes). */
  concurrency?: number;
  /** Host uid of root inside sandboxes (the runtime's idOffset; default 100000). */
  idOffset?: number;
  draining: () => boolean;
  /** True while a sandbox on this node runs the build. */
  buildInUse: (buildId: string) => boolean;
  onLog?: BuildManagerOptions['onLog'];
  onFinished?: BuildManagerOptions['onFinished'];
  log: Logger;
}

export function createTemplateBuilds(o: TemplateBuildsOptions): BuildManager {
  const workDir = join(o.dataDir, 'build-tmp');
  // Scratch of builds a crash interrupted: no build is running yet when the node starts.
  rmSync(workDir, { recursive: true, force: true });
  const log = o.log.child({ module: 'template-builds' });
  return new BuildManager({
    runtime: o.runtime,
    layers: o.layerCache,
    store: o.store,
    workDir,
    images: o.registry.url
      ? new RegistryImageBase({
          url: o.registry.url,
          username: o.registry.username,
          password: o.registry.password,
          store: o.store,
          layers: o.layerCache,
          workDir,
          idOffset: o.idOffset ?? 100_000,
          log,
        })
      : undefined,
    limits: { defaults: o.defaults, maxVcpu: o.cpuCount, maxMemoryMb: o.memoryMb, maxDiskMb: 64 * 1024 },
    concurrency: o.concurrency ?? 2,
    draining: o.draining,
    buildInUse: o.buildInUse,
    onLog: o.onLog,
    onFinished: o.onFinished,
    log,
  });
}
