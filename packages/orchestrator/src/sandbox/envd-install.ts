// envd as every slot bind-mounts it: an immutable, content-addressed copy of the envd bundle under
// `<dataDir>/envd/<sha256-prefix>/` (immutable-install.ts says why), never the build directory.

import { join } from 'node:path';
import { installImmutable, pruneInstalls } from './immutable-install.js';

export function envdInstallRoot(dataDir: string): string {
  return join(dataDir, 'envd');
}

/** Installs `bundleDir` (once per content) and returns the directory slots bind-mount. */
export function installEnvd(bundleDir: string, dataDir: string): Promise<string> {
  return installImmutable(bundleDir, envdInstallRoot(dataDir), 'envd bundle', '.cove-envd-complete');
}

/** Removes installs other than `keep` (the current one and every one a slot still mounts). */
export function pruneEnvdInstalls(dataDir: string, keep: ReadonlySet<string>): Promise<string[]> {
  return pruneInstalls(envdInstallRoot(dataDir), keep);
}
